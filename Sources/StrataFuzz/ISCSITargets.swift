// iSCSI: PDUs as an initiator sends them (RFC 7143), the text keys of Login and Text requests,
// and SCSI CDBs with their Data-Out (SPC-4, SBC-4). Inputs of `iscsi-framer`, `iscsi-login`
// and `iscsi-session` are one settings byte, then the initiator's bytes as they came off the
// socket (scripts/fuzz-corpus.sh captures them from iscsi-inq, iscsi-ls and qemu-img). Before
// each PDU is decoded its header and data digests (CRC-32C, RFC 7143 §11.1) are recomputed for
// the digests then in force, so a mutated PDU is judged on its fields, not its digest.

import Logging
import NIOCore
import StrataCore
import StrataISCSI

enum ISCSITargets {
    static let logger = Logger(label: "strata.fuzz.iscsi") { _ in SwiftLogNoOpLogHandler() }

    static let framer = FuzzTarget(
        name: "iscsi-framer",
        summary: "iSCSI PDU framing (PDUFramer.decode) with header and data digests as the settings byte says"
    ) { input in
        var bytes = FuzzBytes(input)
        let settings = bytes.byte()
        var stream = PDUStream(bytes.rest())
        let framing = FramingSettings(
            headerDigest: settings & 1 != 0, dataDigest: settings & 2 != 0,
            maxReceiveDataLength: TargetLimits.maxReceiveDataLength)
        while let pdu = stream.next(framing) {
            FuzzCheck.require(pdu.header.count == PDU.headerLength, "PDU header of \(pdu.header.count) bytes")
            FuzzCheck.require(pdu.data.count <= framing.maxReceiveDataLength, "PDU data past the limit")
        }
    }

    static let login = FuzzTarget(
        name: "iscsi-login",
        summary: "iSCSI login: Login PDUs, text keys, operational negotiation and CHAP (Login.handle)"
    ) { input in
        var bytes = FuzzBytes(input)
        let settings = bytes.byte()
        var stream = PDUStream(bytes.rest())
        _ = Self.runLogin(&stream, environment: FuzzLoginEnvironment(pool: FuzzPool.make(), settings: settings))
    }

    static let textKeys = FuzzTarget(
        name: "iscsi-text-keys",
        summary: "iSCSI key=value text (TextKeys.parse) and CHAP binary values (Chap.decode)"
    ) { input in
        guard let keys = TextKeys.parse(input) else { return }
        for pair in keys.pairs {
            FuzzCheck.require(!pair.key.isEmpty, "an empty key parsed")
            if let binary = Chap.decode(pair.value) {
                FuzzCheck.require(Chap.decode(Chap.encode(binary)) == binary, "CHAP value does not round-trip")
            }
        }
    }

    static let cdb = FuzzTarget(
        name: "iscsi-cdb",
        summary: "SCSI CDB parsing and the command set (LogicalUnit.dataOutLength and execute) with Data-Out"
    ) { input in
        var bytes = FuzzBytes(input)
        let settings = bytes.byte()
        let lengths = [6, 10, 12, 16, 32, 16, 10, 16]
        let cdb = CDB(bytes.take(lengths[Int(settings & 7)]))
        let data = bytes.rest()
        let pool = FuzzPool.make()
        let target = settings & 8 != 0 ? "vm1@base" : "vm1"
        let unit: LogicalUnit
        do throws(StrataError) {
            unit = LogicalUnit(pool: pool, handle: try pool.handle(target))
        } catch {
            preconditionFailure("fuzz pool has no \(target): \(error.message)")
        }
        let nexus = "iqn.2026-12.org.fuzz:initiator,i,0x000000000001"
        switch unit.dataOutLength(cdb, nexus: nexus, expectedLength: data.count) {
        case .failure:
            return
        case .success(let plan):
            FuzzCheck.require(plan.length >= 0, "negative Data-Out length")
            let result = unit.execute(cdb, data: Array(data.prefix(plan.length)), nexus: nexus, prechecked: plan.checked)
            FuzzCheck.require(result.status != .good || result.sense.isEmpty, "GOOD status with sense data")
        }
    }

    static let session = FuzzTarget(
        name: "iscsi-session",
        summary: "a whole iSCSI connection: login, then the full feature phase (ISCSISession) running SCSI commands"
    ) { input in
        var bytes = FuzzBytes(input)
        let settings = bytes.byte()
        var stream = PDUStream(bytes.rest())
        let pool = FuzzPool.make()
        let environment = FuzzLoginEnvironment(pool: pool, settings: settings)
        guard let login = Self.runLogin(&stream, environment: environment) else { return }
        let parameters = login.parameters
        var unit: LogicalUnit?
        if parameters.sessionType == .normal {
            guard let object = login.object else { return }
            do throws(StrataError) {
                unit = LogicalUnit(pool: pool, handle: try pool.handle(object))
            } catch {
                return  // the handler refuses the login (target removed)
            }
        }
        let nexus = "\(parameters.initiatorName),i," + Chap.encode(login.initiatorSessionID)
        var session = ISCSISession(
            parameters: parameters, tsih: 1, nexus: nexus, unit: unit, directory: environment,
            portal: "127.0.0.1:3260", statusSequence: login.statusSequenceNumber, expectedCommand: stream.lastCommandSN,
            logger: Self.logger)
        let framing = FramingSettings(
            headerDigest: parameters.headerDigest, dataDigest: parameters.dataDigest,
            maxReceiveDataLength: TargetLimits.maxReceiveDataLength)
        while let pdu = stream.next(framing) {
            var pending = session.receive(pdu)
            while !pending.isEmpty {
                let action = pending.removeFirst()
                switch action {
                case .send:
                    continue
                case .close:
                    session.connectionLost()
                    return
                case .execute(let execution):
                    pending += session.complete(execution.tag, result: execution.run())
                }
            }
        }
        session.connectionLost()
    }

    /// Runs the login phase over `stream`; returns the login once it completes, nil when it fails
    /// or the bytes end first.
    static func runLogin(_ stream: inout PDUStream, environment: FuzzLoginEnvironment) -> Login? {
        var login = Login(environment: environment)
        let framing = FramingSettings(maxReceiveDataLength: TargetLimits.loginDataLength)
        while let pdu = stream.next(framing) {
            switch login.handle(pdu) {
            case .respond:
                continue
            case .fail:
                return nil
            case .complete(_, let parameters):
                FuzzCheck.require(parameters.sessionType == .discovery || login.object != nil, "normal session without a target")
                stream.lastCommandSN = pdu.uint32(at: 24)
                return login
            }
        }
        return nil
    }
}

/// The initiator's bytes, cut into PDUs one at a time with digests fixed up first.
struct PDUStream {
    var bytes: [UInt8]
    var position = 0
    /// CmdSN of the last PDU taken (the session's first ExpCmdSN after login).
    var lastCommandSN: UInt32 = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// The next PDU, or nil at the end of the bytes or at a framing error (the handler closes).
    mutating func next(_ settings: FramingSettings) -> PDU? {
        Self.fixDigests(&self.bytes, at: self.position, settings: settings)
        var buffer = ByteBuffer(bytes: self.bytes[self.position...])
        let before = buffer.readableBytes
        do throws(FramingError) {
            guard let pdu = try PDUFramer.decode(&buffer, settings: settings) else { return nil }
            self.position += before - buffer.readableBytes
            return pdu
        } catch {
            return nil
        }
    }

    /// Writes the right header and data digests into the PDU at `start`, where they fit.
    static func fixDigests(_ bytes: inout [UInt8], at start: Int, settings: FramingSettings) {
        guard settings.headerDigest || settings.dataDigest, bytes.count - start >= PDU.headerLength else { return }
        let covered = PDU.headerLength + Int(bytes[start + 4]) * 4
        let dataLength = Int(bytes[start + 5]) << 16 | Int(bytes[start + 6]) << 8 | Int(bytes[start + 7])
        let padded = (dataLength + 3) & ~3
        var position = start + covered
        if settings.headerDigest {
            guard position + 4 <= bytes.count else { return }
            bytes.storeLE(crc32c(Array(bytes[start..<position])), at: position)
            position += 4
        }
        guard settings.dataDigest, dataLength > 0, position + padded + 4 <= bytes.count else { return }
        bytes.storeLE(crc32c(Array(bytes[position..<(position + padded)])), at: position + padded)
    }
}

/// The target side of login: the fuzz pool's objects, and CHAP when the settings byte asks
/// (bit 4: one-way CHAP for every target; bit 5: mutual as well). Challenges are fixed bytes,
/// so a run repeats.
struct FuzzLoginEnvironment: LoginEnvironment, SendTargetsDirectory {
    let pool: Pool
    let settings: UInt8

    func object(forTargetName name: String) throws(StrataError) -> String? {
        guard let object = TargetNames.object(for: name) else { return nil }
        do throws(StrataError) {
            _ = try self.pool.handle(object)
            return object
        } catch where error.code == .notFound || error.code == .invalidArgument {
            return nil
        }
    }

    func chapSettings() -> ChapSettings {
        var chap = ChapSettings()
        if self.settings & 0x10 != 0 {
            chap.all = ChapCredential(
                user: "fuzz-user", secret: "fuzz-secret-0123",
                mutualUser: self.settings & 0x20 != 0 ? "fuzz-target" : nil,
                mutualSecret: self.settings & 0x20 != 0 ? "fuzz-target-secret" : nil)
        }
        return chap
    }

    func randomBytes(_ count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) } }

    func targetObjects() -> [String] { self.pool.targets().map(\.name) }
}
