import ArgumentParser
import Foundation
import Logging
import StrataCore
import StrataNBD
import StrataHTTP
import StrataISCSI
import StrataServer

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the daemon: serve volumes over NBD and iSCSI and answer the other commands.",
        discussion: """
            Creates the pool on first start (sparse, --create-size). Exports every volume read-write \
            as VOLUME and every snapshot read-only as VOLUME@SNAPSHOT, e.g. nbd://127.0.0.1:10809/vm1; \
            over iSCSI, the targets iqn.2026-11.org.strata:VOLUME and iqn.2026-11.org.strata:VOLUME:SNAPSHOT \
            (LUN 0), e.g. iscsi://127.0.0.1:3260/iqn.2026-11.org.strata:vm1/0. \
            With --tls on or require and --tls-certificates DIR (or --tls-psk FILE), NBD clients \
            upgrade with STARTTLS, e.g. nbds://127.0.0.1:10809/vm1?tls-certificates=DIR; under require \
            a client without TLS gets no export. With --tls-certificates, replication and mirror \
            traffic, accepted and made, is mutual TLS too: peers need certificates the same CA signed. \
            The HTTP service (--http, default 127.0.0.1:10811) serves a dashboard at /, Prometheus \
            metrics at /metrics and read-only JSON at /api/v1 (docs/openapi.yaml); beyond loopback it \
            needs --http-token-file. \
            Runs until SIGINT or SIGTERM, then finishes requests in flight, commits and exits 0.
            """)

    @OptionGroup var options: PoolOptions
    @Option(help: "NBD listen address, ADDR:PORT.") var nbd: String = "127.0.0.1:10809"
    @Option(help: "iSCSI listen address, ADDR:PORT, or 'off'. Given again, another portal to the same targets (multipath).")
    var iscsi: [String] = ["127.0.0.1:3260"]
    @Option(
        name: .customLong("iscsi-physical-block-size"),
        help: "Physical block size iSCSI logical units report, 512 or 4096 (logical blocks are 512 bytes); 4096 is a 512-byte-emulation disk, 512 a disk whose physical and logical blocks are one.")
    var iscsiPhysicalBlockSize: String = String(UnitSettings.physicalBlockSizeDefault)
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"
    @Option(name: .customLong("create-size"), help: "Size of a pool created on first start.")
    var createSize: String = "64G"
    @Option(
        name: .customLong("commit-interval"),
        help:
            "Seconds between timer commits of changed metadata (a flush always commits; overwrites reach the disk with the kernel's writeback or the next flush)."
    )
    var commitInterval: Double = 1.0
    @Option(help: "Accept replication from peers on ADDR:PORT (needs --replication-secret-file).")
    var replication: String?
    @Option(name: .customLong("replication-secret-file"), help: "File holding the secret replication peers share.")
    var replicationSecretFile: String?
    @Option(help: "Serve a writable volume over this raw or qcow2 image file (created on first use, then reused); prints its URIs.")
    var overlay: String?
    @Option(name: .customLong("overlay-name"), help: "The --overlay volume's name (default: the file's name).")
    var overlayName: String?
    @Option(help: "NBD TLS: off, on (TLS when the client asks for it) or require (no export without TLS).")
    var tls: String = "off"
    @Option(
        name: .customLong("tls-certificates"),
        help: "Directory with ca-cert.pem, server-cert.pem and server-key.pem (qemu's x509 layout): for --tls, and for replication and mirror traffic.")
    var tlsCertificates: String?
    @Option(
        name: .customLong("replication-tls"),
        help: "Replication and mirror traffic over mutual TLS with the --tls-certificates credentials: on (the default when they are given) or off.")
    var replicationTLS: String?
    @Flag(name: .customLong("tls-verify-peer"), help: "Require NBD clients to present a certificate signed by ca-cert.pem.")
    var tlsVerifyPeer = false
    @Option(
        name: .customLong("tls-psk"),
        help: "A file of username:hexkey lines (nbdkit's and qemu's PSK format), for --tls instead of certificates.")
    var tlsPSK: String?
    @Option(help: "HTTP service (dashboard, /metrics, /api/v1) listen address, ADDR:PORT, or 'off'.")
    var http: String = "127.0.0.1:10811"
    @Option(
        name: .customLong("http-token-file"),
        help: "File holding the bearer token /metrics and /api/v1 require; needed to listen beyond loopback.")
    var httpTokenFile: String?
    @Option(
        name: .customLong("http-tls-certificates"),
        help: "Directory with server-cert.pem, server-key.pem and ca-cert.pem: serve HTTPS.")
    var httpTLSCertificates: String?
    @Option(help: "Count front-end requests for /metrics: 'on' or 'off'.")
    var metrics: String = "on"

    /// Parses `--OPTION ADDR:PORT`; `off` (where `allowOff`) gives nil.
    static func parseAddress(_ value: String, option: String, example: String, allowOff: Bool = false) throws
        -> (String, Int)?
    {
        if allowOff && value == "off" { return nil }
        guard let colon = value.lastIndex(of: ":"), let port = Int(value[value.index(after: colon)...]),
            port > 0, port < 65536
        else {
            let off = allowOff ? ", or off" : ""
            throw ValidationError("invalid --\(option) '\(value)'; write ADDR:PORT, such as \(example)\(off)")
        }
        var host = String(value[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }

    func parseAddress() throws -> (String, Int) {
        try Self.parseAddress(self.nbd, option: "nbd", example: "127.0.0.1:10809")!
    }

    /// The iSCSI portals: one per `--iscsi`, none for `--iscsi off`.
    func parseISCSIAddresses() throws -> [(host: String, port: Int)] {
        if self.iscsi == ["off"] { return [] }
        var portals: [(host: String, port: Int)] = []
        for value in self.iscsi {
            guard value != "off" else { throw ValidationError("--iscsi off cannot be combined with a portal") }
            let (host, port) = try Self.parseAddress(value, option: "iscsi", example: "127.0.0.1:3260", allowOff: true)!
            guard !portals.contains(where: { $0.host == host && $0.port == port }) else {
                throw ValidationError("--iscsi \(value) is given twice; give each portal once")
            }
            portals.append((host, port))
        }
        return portals
    }

    /// The settings of every iSCSI logical unit: `--iscsi-physical-block-size`.
    func parseISCSIUnitSettings() throws -> UnitSettings {
        let value = self.iscsiPhysicalBlockSize
        guard let bytes = UInt64(value), let settings = UnitSettings(physicalBlockSize: bytes) else {
            let allowed = UnitSettings.physicalBlockSizes.map(String.init).joined(separator: " or ")
            throw ValidationError("invalid --iscsi-physical-block-size '\(value)'; use \(allowed) (bytes)")
        }
        return settings
    }

    func parseTLS() throws -> NBDTLSSettings {
        guard let mode = NBDTLSMode(rawValue: self.tls) else {
            throw ValidationError("invalid --tls '\(self.tls)'; use off, on or require")
        }
        return NBDTLSSettings(
            mode: mode, certificatesDirectory: self.tlsCertificates.map(absolutePath), verifyPeer: self.tlsVerifyPeer,
            pskFile: self.tlsPSK.map(absolutePath))
    }

    /// Whether replication and mirror traffic use TLS: by default when certificates are given.
    func parseReplicationTLS() throws -> Bool {
        switch self.replicationTLS {
        case nil: return self.tlsCertificates != nil
        case "on"?:
            guard self.tlsCertificates != nil else {
                throw ValidationError("--replication-tls on needs credentials; give --tls-certificates DIR (ca-cert.pem, server-cert.pem, server-key.pem)")
            }
            return true
        case "off"?:
            if self.tlsCertificates != nil && self.tls == "off" {
                throw ValidationError("--tls-certificates given, but TLS is off for NBD and for replication; add --tls on (NBD TLS when the client asks), --tls require, or drop --replication-tls off")
            }
            return false
        case let other?:
            throw ValidationError("invalid --replication-tls '\(other)'; use on or off")
        }
    }

    func parseHTTPAddress() throws -> (String, Int)? {
        try Self.parseAddress(self.http, option: "http", example: "127.0.0.1:10811", allowOff: true)
    }

    func validate() throws {
        _ = try self.parseAddress()
        let http = try self.parseHTTPAddress()
        if http == nil && (self.httpTokenFile != nil || self.httpTLSCertificates != nil) {
            throw ValidationError("--http-token-file and --http-tls-certificates need the HTTP service; drop them or give --http ADDR:PORT")
        }
        if let http {
            // Refused before the pool is opened or any socket bound.
            do {
                try HTTPServerOptions(host: http.0, port: http.1, tokenFile: self.httpTokenFile).validate()
            } catch {
                throw ValidationError(error.message)
            }
        }
        guard self.metrics == "on" || self.metrics == "off" else {
            throw ValidationError("invalid --metrics '\(self.metrics)'; use on or off")
        }
        _ = try self.parseTLS()
        _ = try self.parseReplicationTLS()
        _ = try self.parseISCSIAddresses()
        _ = try self.parseISCSIUnitSettings()
        _ = try parseSize(self.createSize, option: "--create-size")
        guard Logger.Level(rawValue: self.logLevel) != nil else {
            throw ValidationError("invalid --log-level '\(self.logLevel)'; use trace, debug, info, notice, warning, error or critical")
        }
        guard self.commitInterval > 0 else { throw ValidationError("--commit-interval must be positive") }
        if let name = self.overlayName {
            guard self.overlay != nil else { throw ValidationError("--overlay-name needs --overlay FILE") }
            guard Names.isValid(name) else {
                throw ValidationError("invalid --overlay-name '\(name)'; use 1 to 64 characters from A-Z a-z 0-9 . _ -")
            }
        }
        if let replication = self.replication {
            _ = try Self.parseAddress(replication, option: "replication", example: "0.0.0.0:10810")
            guard self.replicationSecretFile != nil else {
                throw ValidationError("--replication needs --replication-secret-file FILE (a secret the peers share)")
            }
        }
    }

    func run() async throws {
        let (host, port) = try self.parseAddress()
        let level = Logger.Level(rawValue: self.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "strata")
        var options = DaemonOptions(
            directory: self.options.directory, nbdHost: host, nbdPort: port, iscsi: try self.parseISCSIAddresses(),
            createSize: try parseSize(self.createSize, option: "--create-size"), commitIntervalSeconds: self.commitInterval)
        options.replication = try self.replication.flatMap {
            try Self.parseAddress($0, option: "replication", example: "0.0.0.0:10810")
        }
        options.replicationSecretFile = self.replicationSecretFile
        options.overlay = self.overlay.map(absolutePath)
        options.overlayName = self.overlayName
        options.nbdTLS = try self.parseTLS()
        options.replicationTLS = try self.parseReplicationTLS()
        options.http = try self.parseHTTPAddress().map { host, port in
            HTTPServerOptions(
                host: host, port: port, tokenFile: self.httpTokenFile.map(absolutePath),
                certificatesDirectory: self.httpTLSCertificates.map(absolutePath))
        }
        options.metrics = self.metrics == "on"
        options.iscsiUnits = try self.parseISCSIUnitSettings()
        do {
            try await Daemon.run(options, logger: logger)
        } catch let error as StrataError {
            printError(error.message)
            throw ExitCode(1)
        } catch {
            printError("serve: \(error)")
            throw ExitCode(1)
        }
    }
}
