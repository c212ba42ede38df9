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

    /// The x509 files of a credentials directory, as qemu names them.
    public static let caCertificateFile = "ca-cert.pem"
    public static let serverCertificateFile = "server-cert.pem"
    public static let serverKeyFile = "server-key.pem"
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
            let stray = [
                settings.certificatesDirectory.map { _ in "--tls-certificates" }, settings.verifyPeer ? "--tls-verify-peer" : nil,
                settings.pskFile.map { _ in "--tls-psk" },
            ].compactMap { $0 }
            guard stray.isEmpty else {
                throw StrataError(
                    .invalidArgument,
                    "serve: \(stray.joined(separator: " and ")) given, but TLS is off; add --tls on (TLS when the client asks) or --tls require (TLS only)")
            }
            return nil
        }
        let configuration: TLSConfiguration
        switch (settings.certificatesDirectory, settings.pskFile) {
        case (let directory?, nil):
            configuration = try Self.x509Configuration(directory: directory, verifyPeer: settings.verifyPeer)
        case (nil, let file?):
            guard !settings.verifyPeer else {
                throw StrataError(
                    .invalidArgument,
                    "serve: --tls-verify-peer checks client certificates, and --tls-psk uses none; drop one of them")
            }
            configuration = Self.pskConfiguration(keys: try Self.readPSKFile(file))
        case (nil, nil):
            throw StrataError(
                .invalidArgument,
                "serve: --tls \(settings.mode.rawValue) needs credentials: --tls-certificates DIR (with \(Self.caCertificateFile), \(Self.serverCertificateFile) and \(Self.serverKeyFile)) or --tls-psk FILE"
            )
        case (.some, .some):
            throw StrataError(
                .invalidArgument, "serve: give --tls-certificates DIR or --tls-psk FILE, not both")
        }
        do {
            return NBDTLS(mode: settings.mode, context: try NIOSSLContext(configuration: configuration))
        } catch {
            throw Self.contextError(error, settings: settings)
        }
    }

    /// The error for a context BoringSSL refused. Every file parsed already, so what is left
    /// is a key that is not the certificate's (or of a kind BoringSSL does not take): name both.
    private static func contextError(_ error: any Error, settings: NBDTLSSettings) -> StrataError {
        guard let directory = settings.certificatesDirectory else {
            return StrataError(.invalidArgument, "serve: cannot set up TLS with --tls-psk \(settings.pskFile ?? "") (\(error))")
        }
        let key = Self.path(directory, Self.serverKeyFile)
        let certificate = Self.path(directory, Self.serverCertificateFile)
        return StrataError(
            .invalidArgument,
            "serve: \(certificate) and \(key) do not make a pair (\(error)); put the key the certificate was made with beside it, or make a new pair")
    }

    private static func path(_ directory: String, _ file: String) -> String {
        directory.hasSuffix("/") ? directory + file : directory + "/" + file
    }

    /// Reads a credentials file whole.
    /// - Throws: `StrataError` naming the file: missing, a directory, or unreadable.
    static func read(_ path: String, what: String, fix: String) throws(StrataError) -> Data {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw StrataError(.notFound, "serve: \(what) \(path) does not exist; \(fix)")
        }
        guard !isDirectory.boolValue else { throw StrataError(.invalidArgument, "serve: \(what) \(path) is a directory; \(fix)") }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StrataError(
                .unauthorized, "serve: cannot read \(what) \(path) (permission denied?); let the user running strata read it")
        }
        return data
    }

    private static func x509Configuration(directory: String, verifyPeer: Bool) throws(StrataError) -> TLSConfiguration {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw StrataError(
                .notFound,
                "serve: --tls-certificates \(directory) is not a directory; make one holding \(Self.caCertificateFile), \(Self.serverCertificateFile) and \(Self.serverKeyFile) (README: TLS)"
            )
        }
        let fix = "put it in \(directory) (README: TLS shows how to make it with certtool or openssl)"
        let authority = try Self.certificates(Self.path(directory, Self.caCertificateFile), what: "CA certificate", fix: fix)
        let chain = try Self.certificates(Self.path(directory, Self.serverCertificateFile), what: "server certificate", fix: fix)
        let keyPath = Self.path(directory, Self.serverKeyFile)
        let keyBytes = try Self.read(keyPath, what: "server key", fix: fix)
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(bytes: Array(keyBytes), format: .pem)
        } catch {
            throw StrataError(
                .invalidArgument,
                "serve: \(keyPath) is not an unencrypted PEM private key (\(error)); write the key without a passphrase")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        if verifyPeer {
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates(authority)
            configuration.sendCANameList = true
        }
        return configuration
    }

    /// The PEM certificates in `path`, at least one.
    private static func certificates(_ path: String, what: String, fix: String) throws(StrataError) -> [NIOSSLCertificate] {
        let bytes = try Self.read(path, what: what, fix: fix)
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMBytes(Array(bytes))
        } catch {
            throw StrataError(.invalidArgument, "serve: \(what) \(path) is not a PEM certificate (\(error)); \(fix)")
        }
        guard !certificates.isEmpty else {
            throw StrataError(.invalidArgument, "serve: \(what) \(path) holds no PEM certificate; \(fix)")
        }
        return certificates
    }

    /// Parses a `username:hexkey` file (nbdkit's and qemu's PSK format).
    /// - Throws: `StrataError` naming the file and line.
    static func readPSKFile(_ path: String) throws(StrataError) -> [String: [UInt8]] {
        let fix = "write one username:hexkey a line, e.g. with `psktool -u alice -p \(path)`"
        let data = try Self.read(path, what: "PSK file", fix: fix)
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
