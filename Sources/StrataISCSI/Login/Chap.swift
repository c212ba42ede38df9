// CHAP secrets (RFC 7143 §12.1.3 and RFC 1994) for iSCSI logins, kept in the pool directory in
// `iscsi-chap.json` (mode 0600). A credential applies to one target (a volume, so also its
// snapshots, or one VOLUME@SNAPSHOT) or to every target. The daemon reads the file at each
// login, so `strata iscsi chap set` takes effect for the next login without a restart.

import Crypto
import Foundation
import StrataCore

/// The names and secrets of one CHAP setting: the initiator's, and the target's for mutual CHAP.
public struct ChapCredential: Codable, Sendable, Equatable {
    public var user: String
    public var secret: String
    public var mutualUser: String?
    public var mutualSecret: String?

    public init(user: String, secret: String, mutualUser: String? = nil, mutualSecret: String? = nil) {
        self.user = user
        self.secret = secret
        self.mutualUser = mutualUser
        self.mutualSecret = mutualSecret
    }
}

/// Every CHAP setting of a pool.
public struct ChapSettings: Codable, Sendable, Equatable {
    /// For every target that has no setting of its own (and for discovery sessions).
    public var all: ChapCredential?
    /// By VOLUME or VOLUME@SNAPSHOT.
    public var targets: [String: ChapCredential] = [:]

    public init() {}

    public static let fileName = "iscsi-chap.json"
    /// RFC 7143 §12.1.3: secrets shorter than 96 bits are refused by most initiators.
    public static let secretLengths = 12...255

    /// The setting that protects `object` (VOLUME or VOLUME@SNAPSHOT), or for discovery when nil.
    public func credential(for object: String?) -> ChapCredential? {
        guard let object else { return self.all }
        if let exact = self.targets[object] { return exact }
        if let at = object.firstIndex(of: "@"), let volume = self.targets[String(object[..<at])] { return volume }
        return self.all
    }

    /// Reads the pool's settings; none when the file does not exist.
    public static func load(directory: String) throws(StrataError) -> ChapSettings {
        let path = directory + "/" + Self.fileName
        guard FileManager.default.fileExists(atPath: path) else { return ChapSettings() }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StrataError(.io, "read \(path): cannot read the iSCSI CHAP settings; check its permissions")
        }
        do {
            return try JSONDecoder().decode(ChapSettings.self, from: data)
        } catch {
            throw StrataError(
                .corrupt, "read \(path): not valid CHAP settings (\(error)); remove it and set the secrets again")
        }
    }

    /// Writes the settings atomically and durably (StrataCore's `AtomicFile`: a temporary file,
    /// synced, renamed over the old one, the directory synced), mode 0600.
    public func save(directory: String) throws(StrataError) {
        try AtomicFile.writeJSON(self, to: directory + "/" + Self.fileName, operation: "write CHAP settings")
    }
}

/// The CHAP computations: MD5(identifier || secret || challenge) (RFC 1994 §4.1), with
/// swift-crypto's MD5, and the value encodings.
public enum Chap {
    /// CHAP_A=5 is MD5, the only algorithm RFC 7143 requires.
    public static let algorithmMD5 = "5"

    /// The response a peer that knows `secret` gives to `challenge` under `identifier`.
    public static func response(identifier: UInt8, secret: String, challenge: [UInt8]) -> [UInt8] {
        Array(Self.digest(identifier: identifier, secret: secret, challenge: challenge))
    }

    /// Whether `received` is the right response, compared in constant time: how long a
    /// refusal takes says nothing about how many leading bytes of a guess were right.
    public static func verify(_ received: [UInt8], identifier: UInt8, secret: String, challenge: [UInt8]) -> Bool {
        Self.digest(identifier: identifier, secret: secret, challenge: challenge) == received
    }

    private static func digest(identifier: UInt8, secret: String, challenge: [UInt8]) -> Insecure.MD5Digest {
        var hasher = Insecure.MD5()
        hasher.update(data: [identifier])
        hasher.update(data: Array(secret.utf8))
        hasher.update(data: challenge)
        return hasher.finalize()
    }

    /// `0x…` hexadecimal (or `0b…` base64) to bytes; nil when malformed.
    public static func decode(_ value: String) -> [UInt8]? {
        if value.hasPrefix("0x") || value.hasPrefix("0X") {
            let digits = Array(value.dropFirst(2).utf8)
            guard !digits.isEmpty else { return nil }
            let padded = digits.count % 2 == 1 ? [UInt8(ascii: "0")] + digits : digits
            var out: [UInt8] = []
            out.reserveCapacity(padded.count / 2)
            for index in stride(from: 0, to: padded.count, by: 2) {
                guard let high = Self.hexValue(padded[index]), let low = Self.hexValue(padded[index + 1]) else {
                    return nil
                }
                out.append(high << 4 | low)
            }
            return out
        }
        if value.hasPrefix("0b") || value.hasPrefix("0B") {
            // RFC 7143 §6.1: a binary value holds at least one byte, in base64 as in hex ("0b"
            // alone once decoded to no bytes while "0x" was refused; found by the
            // iscsi-text-keys fuzz target).
            let encoded = String(value.dropFirst(2))
            guard !encoded.isEmpty else { return nil }
            return Data(base64Encoded: encoded).map { [UInt8]($0) }
        }
        return nil
    }

    public static func encode(_ bytes: [UInt8]) -> String {
        "0x" + bytes.map { String(format: "%02x", $0) }.joined()
    }

    private static func hexValue(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return digit - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
