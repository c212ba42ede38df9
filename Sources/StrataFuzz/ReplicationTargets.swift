// Daemon-to-daemon replication (ReplicationServer.swift): after the greeting and the HMAC answer,
// the client sends one JSON `ReplicationRequest` line and the server answers `ReplicationReply`
// lines; a user hands `strata receive --resume` a resume token. Each input line is decoded as
// all three, as the server, the client and the CLI would. The HMAC is not a decoder: it is
// compared whole (constant time) before the request line is read.

import Foundation
import StrataCore
import StrataReplication

enum ReplicationTargets {
    static let messages = FuzzTarget(
        name: "replication-messages",
        summary: "replication request and reply lines (ReplicationRequest, ReplicationReply) and resume tokens"
    ) { input in
        for line in input.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            let data = Data(line)
            _ = try? JSONDecoder().decode(ReplicationRequest.self, from: data)
            _ = try? JSONDecoder().decode(ReplicationReply.self, from: data)
            if let text = String(validating: line, as: UTF8.self) {
                do throws(StrataError) {
                    let token = try ResumeToken(parsing: text, operation: "receive")
                    let again = try ResumeToken(parsing: token.description, operation: "receive")
                    FuzzCheck.require(again == token, "resume token does not round-trip")
                } catch {
                    continue
                }
            }
        }
    }
}
