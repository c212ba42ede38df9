// A raw base image: the file's bytes are the disk's bytes. Its virtual size is the file's
// size (a block device's size for a device); reads past it are zeros.
//
// Allocation comes from the file system: SEEK_DATA and SEEK_HOLE name the holes of a sparse
// file, which read as zeros and were never written, so they are reported unmapped. A file
// system that refuses those seeks (EINVAL, EOPNOTSUPP) has its whole file reported mapped,
// which is always safe: mapped only promises the bytes are worth reading.

import StrataCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A raw file or block device presented as a disk.
final class RawImage: BaseImage {
    let file: ImageFile

    init(file: ImageFile) {
        self.file = file
    }

    var virtualSize: UInt64 { self.file.size }

    var layers: [BaseLayer] {
        [BaseLayer(path: self.file.path, format: "raw", virtualSize: self.file.size)]
    }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StrataError) {
        try self.file.read(at: offset, into: buffer)
    }

    func readIfCached(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        self.file.readIfCached(at: offset, into: buffer)
    }

    func fileRange(at offset: UInt64, length: UInt64) -> (descriptor: Int32, offset: UInt64)? {
        guard offset <= self.file.size, length <= self.file.size - offset else { return nil }
        // A file cut short since it was opened (a changed base, refused at its next check) would
        // leave sendfile nothing to send: such a read goes through `read`, which reports it.
        var status = stat()
        guard fstat(self.file.descriptor, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG,
            UInt64(max(status.st_size, 0)) >= offset + length
        else { return nil }
        return (self.file.descriptor, offset)
    }

    func allocation(at offset: UInt64, length: UInt64) throws(StrataError) -> [MappingExtent] {
        var extents = ExtentList()
        let end = offset + length
        let fileEnd = min(end, self.file.size)
        var cursor = offset
        while cursor < fileEnd {
            guard let data = try self.seek(cursor, FileSeek.data) else {
                break  // no data from the cursor to the end of the file, or no seeking at all
            }
            if data == UInt64.max {  // the file system cannot tell holes: everything is data
                extents.append(offset: cursor, length: fileEnd - cursor, mapped: true)
                cursor = fileEnd
                break
            }
            let dataStart = min(data, fileEnd)
            extents.append(offset: cursor, length: dataStart - cursor, mapped: false)
            guard dataStart < fileEnd else {
                cursor = fileEnd
                break
            }
            let hole = try self.seek(dataStart, FileSeek.hole) ?? self.file.size
            let dataEnd = min(hole == UInt64.max ? fileEnd : hole, fileEnd)
            extents.append(offset: dataStart, length: dataEnd - dataStart, mapped: true)
            cursor = dataEnd
        }
        extents.append(offset: cursor, length: end - cursor, mapped: false)
        return extents.extents
    }

    /// `lseek(cursor, whence)`: the offset found, nil when there is none past `cursor` (ENXIO),
    /// or `UInt64.max` when the file system does not support the seek.
    private func seek(_ cursor: UInt64, _ whence: Int32) throws(StrataError) -> UInt64? {
        let found = lseek(self.file.descriptor, off_t(cursor), whence)
        if found >= 0 { return UInt64(found) }
        let code = errno
        switch code {
        case ENXIO: return nil
        case EINVAL, EOPNOTSUPP: return UInt64.max
        default: throw ImageErrors.io("block status base image", "\(self.file.path) (offset=\(cursor))", errno: code)
        }
    }
}
