// The control protocol's codec: every request case survives a JSON-lines round trip, lines
// split where their newlines are, and a reply that cannot be encoded becomes an error reply
// with a message. The last one is a regression test: the reply encoders used to fall back to
// the line `{}`, which the CLI could only report as "unreadable", hiding the real failure.

import Foundation
import StrataCore
@testable import StrataReplication
@testable import StrataServer
import Testing

@Suite struct JSONLinesTests {
    static let requests: [ControlRequest] = [
        .send(SendRequest(snapshot: "vm1@monday", base: "vm1@sunday", resumeToken: nil, format: .rbdDiff, compress: true)),
        .receive(volume: "vm1", force: true),
        .abortReceive(volume: "vm1"),
        .receiveToken(volume: "vm1"),
        .replicateStart(
            ReplicationJob(volume: "vm1", host: "10.0.0.2", port: 10810, everySeconds: 300, keep: 3, secretFile: "/etc/s")),
        .replicateStop(volume: "vm1"),
        .replicateStatus,
        .promote(volume: "vm1"),
        .createVolume(name: "vm1", size: 1 << 30),
    ]

    @Test(arguments: Self.requests)
    func requestRoundTrip(_ request: ControlRequest) throws {
        var line = try JSONLines.encode(request, what: "the request")
        #expect(line.last == UInt8(ascii: "\n"))
        #expect(line.dropLast().contains(UInt8(ascii: "\n")) == false, "one request is one line")
        let body = try #require(JSONLines.takeLine(from: &line))
        #expect(line.isEmpty)
        let decoded = try JSONLines.decode(ControlRequest.self, from: body, error: StrataError(.io, "unreadable"))
        #expect(decoded == request)
    }

    @Test func linesSplitAtTheirNewlines() {
        var pending = Array("{\"a\":1}\n{\"b\":2}\n{\"c\"".utf8)
        #expect(JSONLines.takeLine(from: &pending) == Array("{\"a\":1}".utf8))
        #expect(JSONLines.takeLine(from: &pending) == Array("{\"b\":2}".utf8))
        #expect(JSONLines.takeLine(from: &pending) == nil, "an unfinished line waits for its newline")
        #expect(pending == Array("{\"c\"".utf8))
    }

    @Test func aMalformedLineThrowsTheGivenError() {
        let error = StrataError(.invalidArgument, "control: malformed request")
        #expect(throws: error) { try JSONLines.decode(ControlRequest.self, from: Array("{\"nope\":{}}".utf8), error: error) }
    }

    @Test func anUnencodableReplyBecomesAnErrorReply() throws {
        // JSON has no infinity: a lag of +inf cannot be encoded.
        var status = ReplicationStatus(volume: "vm1", peer: "10.0.0.2:10810")
        status.lagSeconds = .infinity
        let line = JSONLines.encodeReply(ControlMessage(result: .replication([status])))
        #expect(line.last == UInt8(ascii: "\n"))
        let message = try JSONDecoder().decode(ControlMessage.self, from: Data(line.dropLast()))
        #expect(message.result == nil)
        #expect(message.progress == nil)
        let error = try #require(message.error, "the reply must be an error, not an empty object")
        #expect(error.code == StrataError.Code.io.rawValue)
        #expect(error.message.hasPrefix("control: cannot encode the reply"), "\(error.message)")
    }

    @Test func anEncodableReplyKeepsItsResult() throws {
        let status = ReplicationStatus(volume: "vm1", peer: "10.0.0.2:10810")
        let line = JSONLines.encodeReply(ControlMessage(result: .replication([status])))
        let message = try JSONDecoder().decode(ControlMessage.self, from: Data(line.dropLast()))
        #expect(message.error == nil)
        guard case .replication(let jobs) = message.result else {
            Issue.record("expected a replication result, got \(String(describing: message.result))")
            return
        }
        #expect(jobs == [status])
    }

    @Test func anUnencodableRequestThrows() {
        let job = ReplicationJob(volume: "vm1", host: "h", port: 1, everySeconds: .nan, keep: 1, secretFile: "/s")
        #expect(throws: StrataError.self) { try JSONLines.encode(ControlRequest.replicateStart(job), what: "the request") }
    }
}
