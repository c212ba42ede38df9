// x509 credentials in qemu's layout (qemu's `tls-creds-x509` `dir=`, the directory libnbd's
// `tls-certificates=` names): `ca-cert.pem`, the CA that signs every peer's certificate; a
// server's `server-cert.pem` and `server-key.pem`; a client's `client-cert.pem` and
// `client-key.pem`. One directory serves every TLS service of a daemon: NBD (STARTTLS), HTTPS,
// and replication and mirror traffic, where each daemon is a server to its peers and a client of
// them.
//
// Every file is read and parsed when the daemon starts, before it listens; each error names the
// option, the file and the fix, so a bad directory stops the start with nothing to undo.

import Foundation
import NIOSSL
import StrataCore

/// The CA, certificate chain and key of one role, read from a credentials directory.
public struct X509Credentials: Sendable {
    /// Which certificate of the directory: the one a daemon shows when it accepts, or the one it
    /// shows when it connects.
    public enum Role: String, Sendable {
        case server, client
    }

    public static let caCertificateFile = "ca-cert.pem"

    public let directory: String
    public let authority: [NIOSSLCertificate]
    public let chain: [NIOSSLCertificate]
    public let key: NIOSSLPrivateKey
    /// The files the chain and key came from.
    public let certificatePath: String
    public let keyPath: String

    public static func certificateFile(_ role: Role) -> String { "\(role.rawValue)-cert.pem" }
    public static func keyFile(_ role: Role) -> String { "\(role.rawValue)-key.pem" }

    /// Reads `directory` for `role`. With `fallback`, a directory without that role's pair uses
    /// the fallback role's (a daemon connecting to a peer shows its server certificate when it
    /// has no client one).
    /// - Throws: `StrataError` (`.notFound` for a missing directory or file, `.unauthorized` for
    ///   an unreadable one, `.invalidArgument` for a file that does not parse) naming `option`,
    ///   the file and the fix.
    public static func load(directory: String, role: Role, fallback: Role? = nil, option: String) throws(StrataError)
        -> X509Credentials
    {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw StrataError(
                .notFound,
                "serve: \(option) \(directory) is not a directory; make one holding \(Self.caCertificateFile), \(Self.certificateFile(.server)) and \(Self.keyFile(.server)) (README: TLS)"
            )
        }
        var role = role
        if let fallback, !FileManager.default.fileExists(atPath: Self.path(directory, Self.certificateFile(role))) {
            role = fallback
        }
        let fix = "put it in \(directory) (README: TLS shows how to make it with certtool or openssl)"
        let authority = try Self.certificates(Self.path(directory, Self.caCertificateFile), what: "CA certificate", fix: fix)
        let certificatePath = Self.path(directory, Self.certificateFile(role))
        let chain = try Self.certificates(certificatePath, what: "\(role.rawValue) certificate", fix: fix)
        let keyPath = Self.path(directory, Self.keyFile(role))
        let keyBytes = try Self.read(keyPath, what: "\(role.rawValue) key", fix: fix)
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(bytes: Array(keyBytes), format: .pem)
        } catch {
            throw StrataError(
                .invalidArgument,
                "serve: \(keyPath) is not an unencrypted PEM private key (\(error)); write the key without a passphrase")
        }
        return X509Credentials(
            directory: directory, authority: authority, chain: chain, key: key, certificatePath: certificatePath,
            keyPath: keyPath)
    }

    /// A server's configuration: this chain and key, TLS 1.2 at least; with `verifyPeer`, every
    /// client must show a certificate the CA signed (its name is not checked: a client has none
    /// to check against).
    public func serverConfiguration(verifyPeer: Bool) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: self.chain.map { .certificate($0) }, privateKey: .privateKey(self.key))
        configuration.minimumTLSVersion = .tlsv12
        if verifyPeer {
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates(self.authority)
            configuration.sendCANameList = true
        }
        return configuration
    }

    /// A client's configuration: shows this chain and key, and accepts only a server whose
    /// certificate the CA signed for the name or address it is reached at.
    public func clientConfiguration() -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateChain = self.chain.map { .certificate($0) }
        configuration.privateKey = .privateKey(self.key)
        configuration.trustRoots = .certificates(self.authority)
        configuration.certificateVerification = .fullVerification
        return configuration
    }

    /// A context for `configuration`.
    /// - Throws: `.invalidArgument` naming the certificate and key when BoringSSL refuses them:
    ///   every file parsed already, so what is left is a key that is not the certificate's.
    public func context(_ configuration: TLSConfiguration) throws(StrataError) -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw StrataError(
                .invalidArgument,
                "serve: \(self.certificatePath) and \(self.keyPath) do not make a pair (\(error)); put the key the certificate was made with beside it, or make a new pair"
            )
        }
    }

    public static func path(_ directory: String, _ file: String) -> String {
        directory.hasSuffix("/") ? directory + file : directory + "/" + file
    }

    /// Reads a credentials file whole.
    /// - Throws: `StrataError` naming the file: missing, a directory, or unreadable.
    public static func read(_ path: String, what: String, fix: String) throws(StrataError) -> Data {
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
}
