// The one codec of the daemon's two Unix sockets (control.sock and stream.sock), on both ends:
// every request and every reply is one JSON value on one line. A request is a
// `ControlRequest`; the daemon answers with zero or more progress lines and then one line
// holding a result or an error (`ControlMessage`).
//
// Invariant: the daemon never sends a line the client cannot read as a `ControlMessage`. A
// result that cannot be encoded (a non-finite number, say) becomes an error reply naming the
// failure, so the client reports what went wrong instead of a reply with nothing in it.

import Foundation
import StrataCore

/// JSON lines: one value per line.
public enum JSONLines {
    /// `value` as one line: its JSON and a newline.
    /// - Throws: `.invalidArgument` naming `what` when the value cannot be encoded.
    public static func encode<T: Encodable>(_ value: T, what: String) throws(StrataError) -> [UInt8] {
        do {
            var bytes = Array(try JSONEncoder().encode(value))
            bytes.append(UInt8(ascii: "\n"))
            return bytes
        } catch {
            throw StrataError(.invalidArgument, "control: cannot encode \(what) (\(error))")
        }
    }

    /// A reply line for `message`. A message that cannot be encoded becomes an error reply
    /// saying why; the reply line is never empty of meaning.
    public static func encodeReply(_ message: ControlMessage) -> [UInt8] {
        do throws(StrataError) {
            return try Self.encode(message, what: "the reply")
        } catch {
            let replacement = ControlMessage(error: ControlError(StrataError(.io, error.message)))
            // Two strings always encode: failing here is a bug in this file, not an input.
            guard let line = try? Self.encode(replacement, what: "the error reply") else {
                preconditionFailure("control: an error reply of two strings did not encode")
            }
            return line
        }
    }

    /// Decodes one line (without its newline) as `T`.
    /// - Throws: `error` when the line is not a `T`.
    public static func decode<T: Decodable, Bytes: Collection<UInt8>>(
        _ type: T.Type, from line: Bytes, error: StrataError
    ) throws(StrataError) -> T {
        guard let value = try? JSONDecoder().decode(T.self, from: Data(line)) else { throw error }
        return value
    }

    /// Removes the first complete line from `pending` and returns it without its newline; nil
    /// while no newline has arrived.
    public static func takeLine(from pending: inout [UInt8]) -> [UInt8]? {
        guard let newline = pending.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        let line = Array(pending[..<newline])
        pending.removeSubrange(...newline)
        return line
    }
}
