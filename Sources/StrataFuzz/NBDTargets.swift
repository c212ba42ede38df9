// NBD: the bytes a client sends (proto.md). An input is one settings byte, then the client's
// bytes as they came off the socket (scripts/fuzz-corpus.sh captures them from nbdinfo,
// qemu-img and qemu-io). The settings byte picks what the server side would have chosen:
// bits 0-1 the TLS mode (off, on, require; STARTTLS is taken as done, since no TLS runs here),
// bit 2 structured replies, bit 3 the read-only snapshot export for `nbd-requests`.
// NBD carries no checksums, so nothing needs fixing up.

import Logging
import NIOCore
import StrataCore
import StrataNBD

enum NBDTargets {
    static let handshake = FuzzTarget(
        name: "nbd-handshake",
        summary: "NBD client flags and option haggling (NBDNegotiation), then requests on the chosen export"
    ) { input in
        var bytes = FuzzBytes(input)
        let settings = bytes.byte()
        Self.connection(settings: settings, client: bytes.rest())
    }

    static let requests = FuzzTarget(
        name: "nbd-requests",
        summary: "NBD transmission-phase request stream (NBDWire.decodeRequest) run by NBDRequestExecutor"
    ) { input in
        var bytes = FuzzBytes(input)
        let settings = bytes.byte()
        let pool = FuzzPool.make()
        let name = settings & 8 != 0 ? "vm1@base" : "vm1"
        let export: NBDExport
        do throws(StrataError) {
            export = try PoolCatalog(pool: pool).export(named: name)
        } catch {
            preconditionFailure("fuzz pool has no export \(name): \(error.message)")
        }
        var buffer = ByteBuffer(bytes: bytes.rest())
        Self.transmission(&buffer, pool: pool, export: export, structured: settings & 4 != 0, allocation: true)
    }

    static let logger = Logger(label: "strata.fuzz.nbd") { _ in SwiftLogNoOpLogHandler() }

    /// A whole connection as NBDConnectionHandler runs it: flags, options, then requests.
    static func connection(settings: UInt8, client: [UInt8]) {
        let pool = FuzzPool.make()
        let catalog = PoolCatalog(pool: pool)
        let modes: [NBDTLSMode] = [.off, .on, .require, .off]
        var negotiation = NBDNegotiation(tls: modes[Int(settings & 3)])
        var buffer = ByteBuffer(bytes: client)
        do throws(NBDWireError) {
            guard let flags = try NBDWire.decodeClientFlags(&buffer) else { return }
            negotiation.clientFlags(flags)
            while let option = try NBDWire.decodeOption(&buffer) {
                switch negotiation.handle(option, catalog: catalog) {
                case .reply:
                    continue
                case .close:
                    return
                case .startTLS:
                    negotiation.tlsStarted()
                case .start(_, let export):
                    FuzzCheck.require(!(negotiation.tls == .require && !negotiation.tlsActive), "export started without TLS")
                    Self.transmission(
                        &buffer, pool: pool, export: export, structured: negotiation.structuredReplies,
                        allocation: negotiation.allocationContext(for: export.name))
                    return
                }
            }
        } catch {
            return  // the handler drops the connection: an expected outcome
        }
    }

    /// The transmission phase: each decoded request is executed, as the handler's thread pool would.
    static func transmission(
        _ buffer: inout ByteBuffer, pool: Pool, export: NBDExport, structured: Bool, allocation: Bool
    ) {
        let executor = NBDRequestExecutor(
            pool: pool, export: export, structured: structured, allocationContext: allocation, logger: Self.logger)
        let allocator = ByteBufferAllocator()
        do throws(NBDWireError) {
            while let request = try NBDWire.decodeRequest(&buffer) {
                if request.type == NBD.Command.disconnect.rawValue { return }
                let reply = executor.execute(request, allocator: allocator)
                FuzzCheck.require(reply.byteCount >= 16, "NBD reply of \(reply.byteCount) bytes")
            }
        } catch {
            return
        }
    }
}
