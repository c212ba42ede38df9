// AWS Signature Version 4 (the "Authenticating Requests: Using the Authorization Header" recipe
// of the S3 API reference, and the general SigV4 test suite): canonical request, string to
// sign, the HMAC-SHA-256 key chain, the Authorization header. swift-crypto does the hashing.
//
// Swift's s3api (NOTES.md) checks exactly what AWS does, with two habits that matter here:
// x-amz-content-sha256 is mandatory, and the access key holds a colon (`account:user`) that
// stays literal in the Credential. The canonical URI is the path percent-encoded once, every
// byte outside A-Z a-z 0-9 - _ . ~ / encoded; query names and values are encoded the same way
// with `/` encoded too, and sorted.

import Crypto
import Foundation

/// Signs requests for one access key in one region and service.
public struct SigV4Signer: Sendable {
    public let accessKeyID: String
    let secretKey: String
    public let region: String
    public let service: String

    public init(accessKeyID: String, secretKey: String, region: String, service: String = "s3") {
        self.accessKeyID = accessKeyID
        self.secretKey = secretKey
        self.region = region
        self.service = service
    }

    /// The hex SHA-256 of an empty body.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    /// The canonical request: method, URI, query, headers, signed header names, payload hash.
    /// - Parameters:
    ///   - path: the path as sent, not yet encoded (`/bucket/key`).
    ///   - query: name and value pairs, not yet encoded.
    ///   - headers: every header to sign, `host` and `x-amz-date` among them.
    public static func canonicalRequest(
        method: String, path: String, query: [(String, String)], headers: [(String, String)], payloadHash: String
    ) -> String {
        let encoded: [(name: String, value: String)] = query.map { pair in
            (Self.encode(pair.0, slash: true), Self.encode(pair.1, slash: true))
        }
        let sorted = encoded.sorted { left, right in
            left.name == right.name ? left.value < right.value : left.name < right.name
        }
        let canonicalQuery = sorted.map { "\($0.name)=\($0.value)" }.joined(separator: "&")
        let canonicalHeaders = Self.normalized(headers)
        let headerLines: String = canonicalHeaders.map { "\($0.0):\($0.1)\n" }.joined()
        let signedNames: String = canonicalHeaders.map(\.0).joined(separator: ";")
        let parts: [String] = [method, Self.encode(path, slash: false), canonicalQuery, headerLines, signedNames, payloadHash]
        return parts.joined(separator: "\n")
    }

    /// The `Authorization` header's value for a request at `amzDate` (`YYYYMMDDTHHMMSSZ`).
    public func authorization(
        method: String, path: String, query: [(String, String)], headers: [(String, String)], payloadHash: String,
        amzDate: String
    ) -> String {
        let day = String(amzDate.prefix(8))
        let scope = "\(day)/\(self.region)/\(self.service)/aws4_request"
        let canonical = Self.canonicalRequest(
            method: method, path: path, query: query, headers: headers, payloadHash: payloadHash)
        let stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope, Self.hex(SHA256.hash(data: Data(canonical.utf8)))]
            .joined(separator: "\n")
        var key = SymmetricKey(data: Data("AWS4\(self.secretKey)".utf8))
        for part in [day, self.region, self.service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(part.utf8), using: key)))
        }
        let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Data(stringToSign.utf8), using: key))
        let signed = Self.normalized(headers).map(\.0).joined(separator: ";")
        return "AWS4-HMAC-SHA256 Credential=\(self.accessKeyID)/\(scope), SignedHeaders=\(signed), Signature=\(signature)"
    }

    /// `YYYYMMDDTHHMMSSZ` for `date`, in UTC.
    public static func amzDate(_ date: Date) -> String {
        var time = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&time, &parts)
        return String(
            format: "%04d%02d%02dT%02d%02d%02dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
            Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
    }

    /// Percent-encodes every byte outside the unreserved set (and `/` when `slash` is true).
    public static func encode(_ text: String, slash: Bool) -> String {
        var result = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                UInt8(ascii: "~"):
                result.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: "/") where !slash:
                result += "/"
            default:
                result += String(format: "%%%02X", byte)
            }
        }
        return result
    }

    /// Lower-case hex of a digest or MAC.
    static func hex<D: Sequence>(_ bytes: D) -> String where D.Element == UInt8 {
        // A table, not `String(format:)` per byte: a push formats 33 digests per 8 MiB object.
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.underestimatedCount * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// Header names lower-cased, values trimmed with inner runs of spaces folded, sorted by name.
    private static func normalized(_ headers: [(String, String)]) -> [(String, String)] {
        headers.map { name, value in
            let folded = value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            return (name.lowercased(), folded)
        }.sorted { $0.0 < $1.0 }
    }
}
