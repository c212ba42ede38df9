// The copy manager (SPC-4 §5.17, §6.4 EXTENDED COPY (LID1), §6.18 RECEIVE COPY RESULTS) between
// the logical units of one pool: each block-to-block segment (02h) between two identification
// descriptor targets (E4h) is an engine copy (`Pool.copy`), which shares whole chunks
// copy-on-write and moves only the unaligned edges. No data goes through the initiator.
//
// The parameter list (SPC-4 §6.4.3):
// | OFFSET | SIZE | FIELD |
// | 0      | 1    | LIST IDENTIFIER |
// | 1      | 1    | STR (bit 5), LIST ID USAGE (bits 4–3), PRIORITY (bits 2–0) |
// | 2      | 2    | CSCD (target) descriptor list length (bytes, 32 per E4h descriptor) |
// | 8      | 4    | segment descriptor list length (bytes) |
// | 12     | 4    | inline data length (always 0 here) |
// | 16     | n    | target descriptors, then segment descriptors |
// Identification target descriptor (E4h, 32 bytes): type code 0, LU ID TYPE / NUL / device type
// 1, designation descriptor 4–27 (code set 4, type 5, length 7, designator from 8), block
// device parameters 28–31 (disk block length in 29–31).
// Block-to-block segment descriptor (02h, 28 bytes): type 0, DC/CAT 1, descriptor length 2–3
// (0018h), source target index 4–5, destination index 6–7, number of blocks 10–11, source LBA
// 12–19, destination LBA 20–27.
//
// The whole list is checked before anything is copied (sizes and counts, descriptor types,
// indexes, reachability, ranges, write protection and reservations), so a refused list copies
// nothing; an engine error during a segment leaves the segments before it done, as SPC-4 allows.
// Errors: a parameter list shorter than its lengths, or longer than the maximum descriptor list
// length: PARAMETER LIST LENGTH ERROR; too many descriptors: TOO MANY TARGET/SEGMENT
// DESCRIPTORS; another descriptor type: UNSUPPORTED TARGET/SEGMENT DESCRIPTOR TYPE CODE; an
// index past the target list or a designator naming no unit of this pool: COPY ABORTED,
// UNREACHABLE COPY TARGET; a segment past either end: COPY ABORTED (libiscsi accepts no more
// specific code there); a read-only destination (a snapshot): DATA PROTECT, WRITE PROTECTED.

import StrataCore
import Synchronization

enum ExtendedCopy {
    static let maxTargetDescriptors = 8
    static let maxSegmentDescriptors = 128
    /// Room for the most of both descriptors at once.
    static let maxDescriptorListLength = 4096
    /// The segment's NUMBER OF BLOCKS field is 16 bits.
    static let maxSegmentBlocks: UInt64 = 0xffff
    static let targetDescriptorLength = 32
    static let blockSegmentLength = 28
    static let identificationTarget: UInt8 = 0xe4
    static let blockToBlock: UInt8 = 0x02
    /// Held COPY STATUS results per I_T nexus; the oldest goes first.
    static let heldResultsMax = 16

    struct Target {
        let offset: Int
        let codeSet: UInt8
        let type: UInt8
        let designator: [UInt8]
    }

    struct Segment {
        let offset: Int
        let source: Int
        let destination: Int
        let blocks: UInt64
        let sourceLBA: UInt64
        let destinationLBA: UInt64
    }

    struct ParameterList {
        let listID: UInt8
        /// LIST ID USAGE: 00b hold results for RECEIVE COPY RESULTS, 10b do not, 11b no list ID.
        let usage: UInt8
        var targets: [Target] = []
        var segments: [Segment] = []

        /// Decodes and checks the sizes, counts and types of a parameter list.
        init(_ data: [UInt8]) throws(SCSIError) {
            guard data.count >= 16 else { throw SCSIError(.check(.parameterListLengthError)) }
            self.listID = data[0]
            self.usage = (data[1] >> 3) & 0x03
            if self.usage == 1 { throw SCSIError(.check(.invalidParameter(byte: 1, bit: 3))) }
            if self.usage == 3 && self.listID != 0 { throw SCSIError(.check(.invalidParameter(byte: 0))) }
            let targetBytes = Int(BigEndian.read(data, 2, 2))
            let segmentBytes = Int(BigEndian.read(data, 8, 4))
            if BigEndian.read(data, 12, 4) != 0 { throw SCSIError(.check(.invalidParameter(byte: 12))) }
            guard targetBytes + segmentBytes <= ExtendedCopy.maxDescriptorListLength,
                16 + targetBytes + segmentBytes <= data.count
            else { throw SCSIError(.check(.parameterListLengthError)) }
            guard targetBytes % ExtendedCopy.targetDescriptorLength == 0 else {
                throw SCSIError(.check(.invalidParameter(byte: 2)))
            }
            guard targetBytes / ExtendedCopy.targetDescriptorLength <= ExtendedCopy.maxTargetDescriptors else {
                throw SCSIError(.check(.tooManyTargetDescriptors))
            }
            for offset in stride(from: 16, to: 16 + targetBytes, by: ExtendedCopy.targetDescriptorLength) {
                self.targets.append(try Self.target(data, at: offset))
            }
            var offset = 16 + targetBytes
            while offset < 16 + targetBytes + segmentBytes {
                guard offset + 4 <= 16 + targetBytes + segmentBytes else {
                    throw SCSIError(.check(.parameterListLengthError))
                }
                guard data[offset] == ExtendedCopy.blockToBlock else {
                    throw SCSIError(.check(.unsupportedSegmentDescriptorType))
                }
                guard BigEndian.read(data, offset + 2, 2) == UInt64(ExtendedCopy.blockSegmentLength - 4) else {
                    throw SCSIError(.check(.invalidParameter(byte: offset + 2)))
                }
                guard offset + ExtendedCopy.blockSegmentLength <= 16 + targetBytes + segmentBytes else {
                    throw SCSIError(.check(.parameterListLengthError))
                }
                guard self.segments.count < ExtendedCopy.maxSegmentDescriptors else {
                    throw SCSIError(.check(.tooManySegmentDescriptors))
                }
                self.segments.append(
                    Segment(
                        offset: offset, source: Int(BigEndian.read(data, offset + 4, 2)),
                        destination: Int(BigEndian.read(data, offset + 6, 2)), blocks: BigEndian.read(data, offset + 10, 2),
                        sourceLBA: BigEndian.read(data, offset + 12, 8), destinationLBA: BigEndian.read(data, offset + 20, 8)))
                offset += ExtendedCopy.blockSegmentLength
            }
        }

        private static func target(_ data: [UInt8], at offset: Int) throws(SCSIError) -> Target {
            guard data[offset] == ExtendedCopy.identificationTarget else {
                throw SCSIError(.check(.unsupportedTargetDescriptorType))
            }
            // Peripheral device type 0 (block device); LU ID TYPE and NUL are ignored (SPC-4).
            guard data[offset + 1] & 0x1f == 0 else { throw SCSIError(.check(.invalidParameter(byte: offset + 1))) }
            let length = Int(data[offset + 7])
            guard length <= 20 else { throw SCSIError(.check(.invalidParameter(byte: offset + 7))) }
            guard BigEndian.read(data, offset + 29, 3) == LogicalUnit.blockSize else {
                throw SCSIError(.check(.invalidParameter(byte: offset + 29)))
            }
            return Target(
                offset: offset, codeSet: data[offset + 4] & 0x0f, type: data[offset + 5] & 0x0f,
                designator: Array(data[(offset + 8)..<(offset + 8 + length)]))
        }
    }

    /// EXTENDED COPY (LID1) sent to `unit` (any unit of the pool may be the copy manager).
    static func execute(_ cdb: CDB, data: [UInt8], unit: LogicalUnit, nexus: String) throws(SCSIError) -> SCSIResult {
        guard cdb.uint32(10) > 0 else { return .good() }
        let list = try ParameterList(data)
        var status = CopyResults.Status()
        let result = Result { () throws(SCSIError) -> SCSIResult in
            try Self.run(list, unit: unit, nexus: nexus, status: &status)
        }
        let answer: SCSIResult
        switch result {
        case .success(let value): answer = value
        case .failure(let error): answer = error.result
        }
        status.completed = answer.status == .good ? 1 : 2
        if list.usage == 0 { unit.copyResults.hold(status, nexus: nexus, listID: list.listID) }
        return answer
    }

    /// A segment's units and ranges, checked.
    private struct Planned {
        let source: LogicalUnit
        let destination: LogicalUnit
        let segment: Segment
    }

    private static func run(_ list: ParameterList, unit: LogicalUnit, nexus: String, status: inout CopyResults.Status)
        throws(SCSIError) -> SCSIResult
    {
        var plan: [Planned] = []
        for segment in list.segments {
            guard segment.source < list.targets.count, segment.destination < list.targets.count,
                let source = Self.resolve(list.targets[segment.source], from: unit),
                let destination = Self.resolve(list.targets[segment.destination], from: unit)
            else { return .check(.unreachableCopyTarget) }
            if destination.readOnly { return .check(.writeProtected) }
            guard source.reservations.allows(nexus, .read), destination.reservations.allows(nexus, .write) else {
                return .reservationConflict
            }
            let sourceBlocks = try unit.engine { () throws(StrataError) in try source.capacityBlocks() }
            let destinationBlocks = try unit.engine { () throws(StrataError) in try destination.capacityBlocks() }
            let (sourceEnd, sourceOverflow) = segment.sourceLBA.addingReportingOverflow(segment.blocks)
            let (destinationEnd, destinationOverflow) = segment.destinationLBA.addingReportingOverflow(segment.blocks)
            guard !sourceOverflow, !destinationOverflow, sourceEnd <= sourceBlocks, destinationEnd <= destinationBlocks
            else { return .check(.copyAborted) }
            plan.append(Planned(source: source, destination: destination, segment: segment))
        }
        for step in plan where step.segment.blocks > 0 {
            let shift = LogicalUnit.blockShift
            _ = try unit.engine { () throws(StrataError) in
                try unit.pool.copy(
                    from: step.source.handle, at: step.segment.sourceLBA << shift, to: step.destination.handle,
                    at: step.segment.destinationLBA << shift, length: step.segment.blocks << shift)
            }
            status.segments += 1
            status.bytes += step.segment.blocks << shift
        }
        return .good()
    }

    /// The unit a target descriptor names: any unit of the pool through the unit table; a unit
    /// without a table reaches only itself.
    private static func resolve(_ target: Target, from unit: LogicalUnit) -> LogicalUnit? {
        if let table = unit.table {
            return table.unit(codeSet: target.codeSet, type: target.type, designator: target.designator)
        }
        guard target.codeSet == 1 else { return nil }
        let id = Designators.volumeID(type: target.type, target.designator, pool: unit.pool)
        return id == unit.handle.id ? unit : nil
    }

    // MARK: RECEIVE COPY RESULTS

    /// RECEIVE COPY RESULTS (LID1): COPY STATUS (00h) of a held list identifier, or OPERATING
    /// PARAMETERS (03h).
    static func receiveResults(_ cdb: CDB, unit: LogicalUnit, nexus: String) -> SCSIResult {
        let allocation = cdb.uint32(10)
        switch cdb.serviceAction {
        case 0x00:
            guard let status = unit.copyResults.take(nexus: nexus, listID: cdb[2]) else {
                return .check(.invalidField(byte: 2))
            }
            return .good(status.encoded().truncated(to: allocation))
        default:
            return .good(Self.operatingParameters().truncated(to: allocation))
        }
    }

    /// OPERATING PARAMETERS (SPC-4 §6.18.4): the limits above, no inline or held data, one copy
    /// at a time per command, and the two descriptor types implemented.
    static func operatingParameters() -> [UInt8] {
        var data = [UInt8](repeating: 0, count: 44)
        data[4] = 0x01  // SNLID: list ID usage 11b (no list identifier) supported
        BigEndian.put(UInt64(Self.maxTargetDescriptors), 2, into: &data, at: 8)
        BigEndian.put(UInt64(Self.maxSegmentDescriptors), 2, into: &data, at: 10)
        BigEndian.put(UInt64(Self.maxDescriptorListLength), 4, into: &data, at: 12)
        BigEndian.put(Self.maxSegmentBlocks << LogicalUnit.blockShift, 4, into: &data, at: 16)
        BigEndian.put(UInt64(Self.heldResultsMax), 2, into: &data, at: 34)  // total concurrent copies
        data[36] = UInt8(Self.heldResultsMax)  // maximum concurrent copies
        data[37] = UInt8(LogicalUnit.blockShift)  // data segment granularity: one block
        data += [Self.blockToBlock, Self.identificationTarget]
        data[43] = 2
        BigEndian.put(UInt64(data.count - 4), 4, into: &data, at: 0)
        return data
    }

    /// VPD page 8Fh, Third-party Copy (SPC-4 §7.8.17): the commands, the limits and the
    /// descriptors of LID1 EXTENDED COPY, each descriptor padded to a multiple of 4 bytes.
    static func thirdPartyCopyPage() -> [UInt8] {
        func descriptor(_ type: UInt16, _ body: [UInt8]) -> [UInt8] {
            var padded = body
            while (padded.count + 4) % 4 != 0 { padded.append(0) }
            return BigEndian.bytes(UInt64(type), 2) + BigEndian.bytes(UInt64(padded.count), 2) + padded
        }
        let commands: [UInt8] = [0x83, 1, 0x00, 0x84, 2, 0x00, 0x03]
        var parameters = [UInt8](repeating: 0, count: 28)
        BigEndian.put(UInt64(Self.maxTargetDescriptors), 2, into: &parameters, at: 2)
        BigEndian.put(UInt64(Self.maxSegmentDescriptors), 2, into: &parameters, at: 4)
        BigEndian.put(UInt64(Self.maxDescriptorListLength), 4, into: &parameters, at: 6)
        var general = [UInt8](repeating: 0, count: 28)
        BigEndian.put(UInt64(Self.heldResultsMax), 4, into: &general, at: 0)
        BigEndian.put(UInt64(Self.heldResultsMax), 4, into: &general, at: 4)
        BigEndian.put(Self.maxSegmentBlocks << LogicalUnit.blockShift, 4, into: &general, at: 8)
        general[12] = UInt8(LogicalUnit.blockShift)
        return descriptor(0x0001, [UInt8(commands.count)] + commands)
            + descriptor(0x0004, parameters)
            + descriptor(0x0008, [2, Self.blockToBlock, Self.identificationTarget])
            + descriptor(0x000c, [0, 0])
            + descriptor(0x8001, general)
    }
}

/// The copy manager's held COPY STATUS results (SPC-4 §6.18.2), per I_T nexus and list
/// identifier: kept from the end of an EXTENDED COPY with LIST ID USAGE 00b until RECEIVE COPY
/// RESULTS returns them once, or the nexus ends.
final class CopyResults: Sendable {
    struct Status {
        /// COPY MANAGER STATUS: 01h completed without error, 02h completed with an error.
        var completed: UInt8 = 0
        var segments: UInt64 = 0
        var bytes: UInt64 = 0

        /// COPY STATUS parameter data: 12 bytes, the transfer count in bytes while it fits in
        /// 32 bits (units 00h), else in KiB (01h).
        func encoded() -> [UInt8] {
            let inBytes = self.bytes <= 0xffff_ffff
            return BigEndian.bytes(8, 4) + [self.completed] + BigEndian.bytes(min(self.segments, 0xffff), 2)
                + [inBytes ? 0x00 : 0x01] + BigEndian.bytes(inBytes ? self.bytes : min(self.bytes >> 10, 0xffff_ffff), 4)
        }
    }

    private let held = Mutex<[String: [(listID: UInt8, status: Status)]]>([:])

    func hold(_ status: Status, nexus: String, listID: UInt8) {
        self.held.withLock { held in
            var list = held[nexus, default: []].filter { $0.listID != listID }
            list.append((listID, status))
            held[nexus] = Array(list.suffix(ExtendedCopy.heldResultsMax))
        }
    }

    func take(nexus: String, listID: UInt8) -> Status? {
        self.held.withLock { held in
            guard let index = held[nexus]?.firstIndex(where: { $0.listID == listID }) else { return nil }
            return held[nexus]!.remove(at: index).status
        }
    }

    func discard(_ nexus: String) {
        _ = self.held.withLock { $0.removeValue(forKey: nexus) }
    }
}
