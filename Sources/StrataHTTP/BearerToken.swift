// The HTTP service's bearer token (RFC 6750 §2.1): read from `--http-token-file`, compared in
// constant time so the time a wrong guess takes does not tell how much of it was right.

import Foundation
import StrataCore

/// A secret every /metrics and /api request must present as `Authorization: Bearer TOKEN`.
public struct BearerToken: Sendable {
    let secret: [UInt8]

    /// The bytes a token may hold: RFC 6750's b64token characters.
    static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return Array("-._~+/=".utf8).contains(byte)
        }
    }

    /// A token from its text.
    /// - Throws: `.invalidArgument` when it is empty or holds characters a header cannot carry.
    public init(_ text: String, source: String) throws(StrataError) {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty else {
            throw StrataError(.invalidArgument, "serve: token file \(source) is empty; write a token (for example `openssl rand -hex 32`) into it")
        }
        guard bytes.allSatisfy(Self.isTokenCharacter) else {
            throw StrataError(
                .invalidArgument,
                "serve: token file \(source) holds characters a bearer token cannot carry; use A-Z a-z 0-9 - . _ ~ + / =")
        }
        self.secret = bytes
    }

    /// Reads the token from a file (surrounding white space and the final newline are dropped).
    /// - Throws: `.notFound` or `.io` when the file cannot be read, `.invalidArgument` as `init`.
    public static func load(file: String) throws(StrataError) -> BearerToken {
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw StrataError(.notFound, "serve: cannot read --http-token-file \(file) (\(error.localizedDescription)); create it with a token, mode 0600")
        }
        return try BearerToken(text.trimmingCharacters(in: .whitespacesAndNewlines), source: file)
    }

    /// True when the Authorization header value is `Bearer` and this token. The comparison
    /// reads every byte of the longer of the two, whatever differs where.
    public func authorizes(_ authorization: String?) -> Bool {
        guard let authorization else { return false }
        let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return false }
        return Self.constantTimeEqual(Array(parts[1].utf8), self.secret)
    }

    /// Equality whose time depends only on the lengths.
    static func constantTimeEqual(_ left: [UInt8], _ right: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: left.count ^ right.count)
        difference |= UInt8(truncatingIfNeeded: (left.count ^ right.count) >> 8)
        let length = max(left.count, right.count)
        for index in 0..<length {
            let a = index < left.count ? left[index] : 0
            let b = index < right.count ? right[index] : 0
            difference |= a ^ b
        }
        return difference == 0 && left.count == right.count
    }
}
