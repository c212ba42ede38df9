// The negotiation phase's state machine (proto.md "Option haggling"): a value type that takes
// one option and returns what to send and what happens next. No sockets, no locks; the
// connection handler owns it and tests drive it directly.
//
// Supported: EXPORT_NAME, ABORT, LIST, INFO, GO (INFO_EXPORT, NAME, DESCRIPTION, BLOCK_SIZE),
// STRUCTURED_REPLY, LIST_META_CONTEXT and SET_META_CONTEXT (`base:allocation`), and STARTTLS
// when the server has TLS (`NBDTLSMode`). Anything else gets NBD_REP_ERR_UNSUP, and the client
// may go on negotiating.
//
// TLS (proto.md "TLS support"): STARTTLS is answered NBD_REP_ACK and the outcome `.startTLS`
// tells the handler to put TLS under the connection before it reads another byte; the handler
// then calls `tlsStarted()`, which forgets what was negotiated in clear text (structured
// replies, meta contexts), so the client negotiates again under TLS, as proto.md's STARTTLS
// text asks. A second STARTTLS is NBD_REP_ERR_INVALID. Under `require` nothing but STARTTLS and
// ABORT is served before TLS: other options get NBD_REP_ERR_TLS_REQD and EXPORT_NAME closes.
//
// Errors from the catalog: only "absent" (`StrataError.Code.notFound`) is an unknown export
// (NBD_REP_ERR_UNKNOWN); any other engine error reaches the client as the error reply
// `StrataError.nbdOptionReply` names, with the message, and is handed to the handler to log.

import NIOCore
import StrataCore

/// An export as the NBD front end sees it.
public struct NBDExport: Sendable, Equatable {
    public let name: String
    public let description: String
    public let size: UInt64
    public let readOnly: Bool
    public let handle: VolumeHandle
    /// The pool the export lives in when it is not the server's own (a mirror leg's copy).
    public let pool: Pool?

    public init(
        name: String, description: String, size: UInt64, readOnly: Bool, handle: VolumeHandle, pool: Pool? = nil
    ) {
        self.name = name
        self.description = description
        self.size = size
        self.readOnly = readOnly
        self.handle = handle
        self.pool = pool
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.name == rhs.name && lhs.description == rhs.description && lhs.size == rhs.size
            && lhs.readOnly == rhs.readOnly && lhs.handle == rhs.handle && lhs.pool === rhs.pool
    }
}

/// Where negotiation finds exports.
public protocol NBDExportCatalog: Sendable {
    /// Every export, for NBD_OPT_LIST.
    /// - Throws: `StrataError` when the engine cannot list or open them (never for one that
    ///   vanished while listing: that one is left out).
    func exports() throws(StrataError) -> [NBDExport]
    /// The export called `name`.
    /// - Throws: `StrataError` (code `.notFound` or `.invalidArgument`) naming it.
    func export(named name: String) throws(StrataError) -> NBDExport
}

/// One connection's negotiation state.
public struct NBDNegotiation: Sendable {
    public enum Outcome: Sendable, Equatable {
        /// Send these bytes and keep negotiating; `engineError`, when set, is an engine failure
        /// (not an absent export) the reply carries, for the log.
        case reply(ByteBuffer, engineError: StrataError? = nil)
        /// Send these bytes and enter the transmission phase on this export.
        case start(ByteBuffer, NBDExport)
        /// Send these bytes (possibly none) and close the connection; `engineError` as for `reply`.
        case close(ByteBuffer, engineError: StrataError? = nil)
        /// Send these bytes (STARTTLS's ACK) in clear text, then run TLS on the connection before
        /// reading anything more, then call `tlsStarted()` and keep negotiating.
        case startTLS(ByteBuffer)
    }

    /// Whether this server offers TLS and whether it insists on it.
    public let tls: NBDTLSMode
    /// True once STARTTLS was acknowledged and the handler started TLS.
    public private(set) var tlsActive = false
    public private(set) var structuredReplies = false
    public private(set) var noZeroes = false
    /// Meta contexts selected by SET_META_CONTEXT, for the export named alongside.
    public private(set) var metaContexts: (export: String, contexts: Set<String>) = ("", [])

    /// A negotiation under `tls` (proto.md's NOTLS, SELECTIVETLS or FORCEDTLS mode).
    public init(tls: NBDTLSMode = .off) {
        self.tls = tls
    }

    /// Records that TLS now runs under the connection: what was negotiated in clear text is
    /// forgotten, and the client negotiates again.
    /// - Precondition: the last outcome was `.startTLS`, and TLS was not already active.
    public mutating func tlsStarted() {
        precondition(self.tls != .off, "TLS started on a server with TLS off")
        precondition(!self.tlsActive, "TLS started twice")
        self.tlsActive = true
        self.structuredReplies = false
        self.metaContexts = ("", [])
    }

    /// Records the client's flags.
    public mutating func clientFlags(_ flags: UInt32) {
        self.noZeroes = flags & NBD.clientFlagNoZeroes != 0
    }

    /// True when `base:allocation` was selected for `export`.
    public func allocationContext(for export: String) -> Bool {
        self.metaContexts.export == export && self.metaContexts.contexts.contains(NBD.baseAllocation)
    }

    /// The transmission flags for an export under what was negotiated.
    public func transmissionFlags(for export: NBDExport) -> NBD.TransmissionFlags {
        var flags: NBD.TransmissionFlags = [
            .hasFlags, .sendFlush, .sendFUA, .sendTrim, .sendWriteZeroes, .canMultiConn, .sendCache, .sendFastZero,
        ]
        if export.readOnly { flags.insert(.readOnly) }
        if self.structuredReplies { flags.insert(.sendDF) }
        return flags
    }

    /// Handles one option.
    public mutating func handle(_ request: NBDOptionRequest, catalog: any NBDExportCatalog) -> Outcome {
        var out = ByteBuffer()
        let code = request.option
        var data = request.data
        if let refused = self.refusedWithoutTLS(code) { return refused }
        guard let option = NBD.Option(rawValue: code) else {
            NBDWire.writeOptionError(into: &out, option: code, type: .errorUnsupported, message: "option \(code) is not supported")
            return .reply(out)
        }
        switch option {
        case .exportName:
            let name = data.readString(length: data.readableBytes) ?? ""
            // EXPORT_NAME has no error reply: an unknown export, or one the engine fails to
            // open, can only close the connection.
            let export: NBDExport
            do throws(StrataError) {
                export = try catalog.export(named: name)
            } catch {
                return .close(out, engineError: error.code == .notFound ? nil : error)
            }
            NBDWire.writeExportNameReply(
                into: &out, size: export.size, flags: self.transmissionFlags(for: export), noZeroes: self.noZeroes)
            return .start(out, export)
        case .abort:
            NBDWire.writeOptionReply(into: &out, option: code, type: .ack)
            return .close(out)
        case .list:
            guard data.readableBytes == 0 else { return self.invalid(code, "LIST takes no data") }
            let exports: [NBDExport]
            do throws(StrataError) {
                exports = try catalog.exports()
            } catch {
                return self.failed(code, error)
            }
            for export in exports {
                var entry = ByteBuffer()
                entry.writeInteger(UInt32(export.name.utf8.count))
                entry.writeString(export.name)
                entry.writeString(export.description)
                NBDWire.writeOptionReply(into: &out, option: code, type: .server, data: entry)
            }
            NBDWire.writeOptionReply(into: &out, option: code, type: .ack)
            return .reply(out)
        case .info, .go:
            return self.infoOrGo(code, isGo: option == .go, data: &data, catalog: catalog)
        case .structuredReply:
            guard data.readableBytes == 0 else { return self.invalid(code, "STRUCTURED_REPLY takes no data") }
            self.structuredReplies = true
            NBDWire.writeOptionReply(into: &out, option: code, type: .ack)
            return .reply(out)
        case .listMetaContext, .setMetaContext:
            return self.metaContext(code, set: option == .setMetaContext, data: &data, catalog: catalog)
        case .startTLS:
            return self.startTLS(code, data: data)
        case .peekExport, .extendedHeaders:
            NBDWire.writeOptionError(into: &out, option: code, type: .errorUnsupported, message: "\(option) is not supported")
            return .reply(out)
        }
    }

    /// proto.md FORCEDTLS: before TLS runs under `require`, every option but STARTTLS and ABORT
    /// is refused; nil when the option may go on.
    private func refusedWithoutTLS(_ code: UInt32) -> Outcome? {
        guard self.tls == .require && !self.tlsActive else { return nil }
        switch NBD.Option(rawValue: code) {
        case .startTLS, .abort:
            return nil
        case .exportName:
            // EXPORT_NAME cannot be refused with an error, so the session ends.
            return .close(ByteBuffer())
        default:
            var out = ByteBuffer()
            NBDWire.writeOptionError(
                into: &out, option: code, type: .errorTLSRequired,
                message: "this server requires TLS: send NBD_OPT_STARTTLS first (an nbds:// URI with tls-certificates=DIR, or qemu's tls-creds)")
            return .reply(out)
        }
    }

    /// proto.md "TLS support": ACK under `on` and `require` (once), POLICY under `off`.
    private func startTLS(_ code: UInt32, data: ByteBuffer) -> Outcome {
        var out = ByteBuffer()
        guard self.tls != .off else {
            NBDWire.writeOptionError(
                into: &out, option: code, type: .errorPolicy,
                message: "TLS is off on this server; serve with --tls on (or require) and --tls-certificates DIR")
            return .reply(out)
        }
        guard !self.tlsActive else { return self.invalid(code, "TLS is already running on this connection") }
        guard data.readableBytes == 0 else { return self.invalid(code, "STARTTLS takes no data") }
        NBDWire.writeOptionReply(into: &out, option: code, type: .ack)
        return .startTLS(out)
    }

    /// The reply to an option the catalog failed: NBD_REP_ERR_UNKNOWN for an absent export,
    /// otherwise the error `StrataError.nbdOptionReply` names, with the engine error for the log.
    private func failed(_ code: UInt32, _ error: StrataError) -> Outcome {
        var out = ByteBuffer()
        NBDWire.writeOptionError(into: &out, option: code, type: error.nbdOptionReply, message: error.message)
        return .reply(out, engineError: error.code == .notFound ? nil : error)
    }

    private func invalid(_ code: UInt32, _ message: String) -> Outcome {
        var out = ByteBuffer()
        NBDWire.writeOptionError(into: &out, option: code, type: .errorInvalid, message: message)
        return .reply(out)
    }

    private func infoOrGo(_ code: UInt32, isGo: Bool, data: inout ByteBuffer, catalog: any NBDExportCatalog) -> Outcome {
        guard let name = data.readLengthPrefixedString(), let count = data.readInteger(as: UInt16.self),
            data.readableBytes == Int(count) * 2
        else { return self.invalid(code, "malformed INFO/GO request") }
        var requested = Set<UInt16>()
        for _ in 0..<count { requested.insert(data.readInteger(as: UInt16.self)!) }
        let export: NBDExport
        do throws(StrataError) {
            export = try catalog.export(named: name)
        } catch {
            return self.failed(code, error)
        }
        var out = ByteBuffer()
        var info = ByteBuffer()
        info.writeInteger(NBD.Info.export.rawValue)
        info.writeInteger(export.size)
        info.writeInteger(self.transmissionFlags(for: export).rawValue)
        NBDWire.writeOptionReply(into: &out, option: code, type: .info, data: info)
        if requested.contains(NBD.Info.name.rawValue) {
            var body = ByteBuffer()
            body.writeInteger(NBD.Info.name.rawValue)
            body.writeString(export.name)
            NBDWire.writeOptionReply(into: &out, option: code, type: .info, data: body)
        }
        if requested.contains(NBD.Info.description.rawValue) {
            var body = ByteBuffer()
            body.writeInteger(NBD.Info.description.rawValue)
            body.writeString(export.description)
            NBDWire.writeOptionReply(into: &out, option: code, type: .info, data: body)
        }
        // Block sizes: any byte granularity works; 4 KiB is preferred; 32 MiB is the most per request.
        var sizes = ByteBuffer()
        sizes.writeInteger(NBD.Info.blockSize.rawValue)
        sizes.writeInteger(UInt32(1))
        sizes.writeInteger(UInt32(4096))
        sizes.writeInteger(UInt32(NBDWire.requestBytesMax))
        NBDWire.writeOptionReply(into: &out, option: code, type: .info, data: sizes)
        NBDWire.writeOptionReply(into: &out, option: code, type: .ack)
        return isGo ? .start(out, export) : .reply(out)
    }

    private mutating func metaContext(
        _ code: UInt32, set: Bool, data: inout ByteBuffer, catalog: any NBDExportCatalog
    ) -> Outcome {
        // proto.md: SET_META_CONTEXT replaces the selection, even when it fails.
        if set { self.metaContexts = ("", []) }
        guard self.structuredReplies else {
            return self.invalid(code, "negotiate STRUCTURED_REPLY before meta contexts")
        }
        guard let name = data.readLengthPrefixedString(), let count = data.readInteger(as: UInt32.self),
            count <= 256
        else { return self.invalid(code, "malformed meta context request") }
        var queries: [String] = []
        for _ in 0..<count {
            guard let query = data.readLengthPrefixedString() else {
                return self.invalid(code, "malformed meta context query")
            }
            queries.append(query)
        }
        guard data.readableBytes == 0 else { return self.invalid(code, "trailing bytes in meta context request") }
        do throws(StrataError) {
            _ = try catalog.export(named: name)
        } catch {
            return self.failed(code, error)
        }
        // `base:allocation` is the one context; "base:" selects all of the base namespace, and
        // LIST with no queries lists everything.
        let matches = (!set && queries.isEmpty) || queries.contains(NBD.baseAllocation) || queries.contains("base:")
        var out = ByteBuffer()
        if matches {
            var body = ByteBuffer()
            body.writeInteger(NBD.baseAllocationID)
            body.writeString(NBD.baseAllocation)
            NBDWire.writeOptionReply(into: &out, option: code, type: .metaContext, data: body)
        }
        if set { self.metaContexts = (name, matches ? [NBD.baseAllocation] : []) }
        NBDWire.writeOptionReply(into: &out, option: code, type: .ack)
        return .reply(out)
    }
}

extension StrataError {
    /// The option error reply for this error, in one place: NBD_REP_ERR_UNKNOWN only for an
    /// absent export. proto.md has no generic "server failed" reply; an engine failure (I/O,
    /// corruption, a failed pool, no space, a newer format) gets NBD_REP_ERR_PLATFORM, the
    /// nearest ("cannot be done on this server"), and its message says what failed.
    public var nbdOptionReply: NBD.OptionReply {
        switch self.code {
        case .notFound: return .errorUnknown
        case .invalidArgument: return .errorInvalid
        case .unauthorized, .readOnly, .busy, .alreadyExists: return .errorPolicy
        case .io, .corrupt, .failed, .noSpace, .unsupported: return .errorPlatform
        }
    }
}
