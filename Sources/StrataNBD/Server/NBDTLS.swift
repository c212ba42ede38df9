// TLS for the NBD front end: the settings `strata serve` takes (`--tls`, `--tls-certificates`,
// `--tls-verify-peer`, `--tls-psk`), turned once, at start, into one `NIOSSLContext` that every
// connection's `NIOSSLServerHandler` shares after STARTTLS (NBDConnectionHandler).
//
// Certificates use qemu's x509 credentials layout (qemu's `tls-creds-x509` `dir=`, the same
// directory libnbd's `tls-certificates=` names on the client): `ca-cert.pem` (the CA that signs
// the server's and, with `--tls-verify-peer`, the clients' certificates), `server-cert.pem`
// and `server-key.pem` (unencrypted PEM). A PSK file is nbdkit's and qemu's `tls-creds-psk`
// format: one `username:hexkey` a line (psktool writes it).
//
// Everything is checked before the daemon listens: a missing, unreadable or unparsable file, a
// key that does not match its certificate, options that contradict each other; each error
// names the file or option and the fix. TLS 1.2 is the oldest version accepted (proto.md
// "TLS versions"). swift-nio-ssl (BoringSSL) does PSK on the server in TLS 1.2 only, so a PSK
// server offers TLS 1.2 with the PSK cipher suites; gnutls clients (libnbd, qemu) negotiate it.

import Foundation
import NIOCore
import NIOSSL
import StrataCore
import StrataTLS

/// What `strata serve` was asked for, before any file is read.
public struct NBDTLSSettings: Sendable, Equatable {
    public var mode: NBDTLSMode
    /// The x509 credentials directory (ca-cert.pem, server-cert.pem, server-key.pem).
    public var certificatesDirectory: String?
    /// Ask every client for a certificate signed by ca-cert.pem, and refuse one without.
    public var verifyPeer: Bool
    /// A `username:hexkey` file, instead of certificates.
    public var pskFile: String?

    public init(mode: NBDTLSMode = .off, certificatesDirectory: String? = nil, verifyPeer: Bool = false, pskFile: String? = nil) {
        self.mode = mode
        self.certificatesDirectory = certificatesDirectory
        self.verifyPeer = verifyPeer
        self.pskFile = pskFile
    }
}

/// TLS as the NBD server runs it: the mode and the context every connection shares.
public struct NBDTLS: Sendable {
    public let mode: NBDTLSMode
    let context: NIOSSLContext

    /// The TLS 1.2 cipher suites that authenticate with a pre-shared key (BoringSSL names).
    static let pskCipherSuites = [
        "ECDHE-PSK-CHACHA20-POLY1305", "ECDHE-PSK-AES128-CBC-SHA", "ECDHE-PSK-AES256-CBC-SHA", "PSK-AES128-CBC-SHA",
        "PSK-AES256-CBC-SHA",
    ].joined(separator: ":")

    /// Reads and checks the credentials `settings` names; nil when TLS is off.
    /// - Throws: `StrataError` (`.invalidArgument` for contradicting options or a bad file,
    ///   `.notFound` for a missing one, `.unauthorized` for an unreadable one) naming the
    ///   option or file and the fix.
    public static func load(_ settings: NBDTLSSettings) throws(StrataError) -> NBDTLS? {
        guard settings.mode != .off else {
            // The certificates may serve replication without NBD TLS; the daemon's options
            // decide whether anything uses them.
            let stray = [settings.verifyPeer ? "--tls-verify-peer" : nil, settings.pskFile.map { _ in "--tls-psk" }]
                .compactMap { $0 }
            guard stray.isEmpty else {
                throw StrataError(
                    .invalidArgument,
                    "serve: \(stray.joined(separator: " and ")) given, but TLS is off; add --tls on (TLS when the client asks) or --tls require (TLS only)")
            }
            return nil
        }
        switch (settings.certificatesDirectory, settings.pskFile) {
        case (let directory?, nil):
            let credentials = try X509Credentials.load(directory: directory, role: .server, option: "--tls-certificates")
            return NBDTLS(mode: settings.mode, context: try credentials.context(credentials.serverConfiguration(verifyPeer: settings.verifyPeer)))
        case (nil, let file?):
            guard !settings.verifyPeer else {
                throw StrataError(
                    .invalidArgument,
                    "serve: --tls-verify-peer checks client certificates, and --tls-psk uses none; drop one of them")
            }
            let keys = try Self.readPSKFile(file)
            do {
                return NBDTLS(mode: settings.mode, context: try NIOSSLContext(configuration: Self.pskConfiguration(keys: keys)))
            } catch {
                throw StrataError(.invalidArgument, "serve: cannot set up TLS with --tls-psk \(file) (\(error))")
            }
        case (nil, nil):
            throw StrataError(
                .invalidArgument,
                "serve: --tls \(settings.mode.rawValue) needs credentials: --tls-certificates DIR (with \(X509Credentials.caCertificateFile), \(X509Credentials.certificateFile(.server)) and \(X509Credentials.keyFile(.server))) or --tls-psk FILE"
            )
        case (.some, .some):
            throw StrataError(
                .invalidArgument, "serve: give --tls-certificates DIR or --tls-psk FILE, not both")
        }
    }

    /// Parses a `username:hexkey` file (nbdkit's and qemu's PSK format).
    /// - Throws: `StrataError` naming the file and line.
    static func readPSKFile(_ path: String) throws(StrataError) -> [String: [UInt8]] {
        let fix = "write one username:hexkey a line, e.g. with `psktool -u alice -p \(path)`"
        let data = try X509Credentials.read(path, what: "PSK file", fix: fix)
        guard let text = String(data: data, encoding: .utf8) else {
            throw StrataError(.invalidArgument, "serve: PSK file \(path) is not UTF-8 text; \(fix)")
        }
        var keys: [String: [UInt8]] = [:]
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let entry = line.trimmingCharacters(in: .whitespaces)
            if entry.isEmpty { continue }
            guard let colon = entry.firstIndex(of: ":"), colon != entry.startIndex,
                let key = Self.hexBytes(entry[entry.index(after: colon)...]), !key.isEmpty
            else {
                throw StrataError(.invalidArgument, "serve: PSK file \(path) line \(index + 1) is not username:hexkey; \(fix)")
            }
            keys[String(entry[..<colon])] = key
        }
        guard !keys.isEmpty else { throw StrataError(.invalidArgument, "serve: PSK file \(path) holds no key; \(fix)") }
        return keys
    }

    /// The bytes an even-length hex string spells; nil if it is not one.
    static func hexBytes(_ text: Substring) -> [UInt8]? {
        guard text.count % 2 == 0, text.allSatisfy(\.isHexDigit) else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.count / 2)
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            guard let byte = UInt8(text[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        return bytes
    }

    private static func pskConfiguration(keys: [String: [UInt8]]) -> TLSConfiguration {
        var configuration = TLSConfiguration.makePreSharedKeyConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        // BoringSSL answers external PSKs in TLS 1.2 only (swift-nio-ssl's server callback says so).
        configuration.maximumTLSVersion = .tlsv12
        configuration.cipherSuites = Self.pskCipherSuites
        configuration.pskServerProvider = { context in
            guard let key = keys[context.clientIdentity], key.count <= context.maxPSKLength else {
                throw NBDTLSError.unknownPSKIdentity(context.clientIdentity)
            }
            var secret = NIOSSLSecureBytes()
            secret.append(key)
            return PSKServerIdentityResponse(key: secret)
        }
        return configuration
    }
}

/// Why a TLS handshake was refused by Strata's own checks.
enum NBDTLSError: Error, CustomStringConvertible {
    case unknownPSKIdentity(String)

    var description: String {
        switch self {
        case .unknownPSKIdentity(let identity): return "PSK identity '\(identity)' is not in the --tls-psk file"
        }
    }
}
