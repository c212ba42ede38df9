// Opening a base image file: the format is probed from its first bytes (qcow2's magic, else
// raw), and a qcow2 image's backing chain is opened below it, top down.
//
// Backing names resolve as QEMU resolves them: an absolute name stays as it is; a relative
// one is relative to the directory of the image that names it (not the working directory).
// The backing format header extension, when present, decides the format ("raw" opens even a
// file that starts with qcow2's magic as raw, as QEMU does); otherwise the backing file is
// probed. A chain is refused when a file appears twice in it (same device and inode: a loop,
// however the paths are spelled) or when it is deeper than `Limits.baseImageChainDepthMax`.

import StrataCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Opens external base images for StrataCore's `BaseImage` seam.
public enum BaseImages {
    /// Opens `path` read-only as a raw or qcow2 image, with its whole backing chain.
    /// - Parameter path: the image file or block device; relative paths are relative to the working directory.
    /// - Returns: the image; its `layers` list the files top down with absolute paths.
    /// - Throws: `.notFound`, `.io`, `.corrupt` or `.invalidArgument` naming the file and the problem.
    public static func open(path: String) throws(StrataError) -> any BaseImage {
        var chain = Chain()
        return try chain.open(path: try Self.absolute(path), format: nil, child: nil)
    }

    /// `path` made absolute against the working directory, with empty and "." components dropped.
    /// ".." is kept: resolving it lexically would be wrong across symbolic links.
    static func absolute(_ path: String) throws(StrataError) -> String {
        var full = path
        if !path.hasPrefix("/") {
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            guard getcwd(&buffer, buffer.count) != nil else {
                throw ImageErrors.io("open base image", path, errno: errno)
            }
            full = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) + "/" + path
        }
        let parts = full.split(separator: "/").filter { $0 != "." }
        return "/" + parts.joined(separator: "/")
    }

    /// Where a backing name stored in the image at `child` points.
    static func resolve(backing name: String, relativeTo child: String) -> String {
        if name.hasPrefix("/") { return name }
        let directory = child[..<(child.lastIndex(of: "/") ?? child.startIndex)]
        return String(directory) + "/" + name
    }

    /// The files of one chain being opened, top down.
    private struct Chain {
        var seen: Set<ImageFile.FileKey> = []

        mutating func open(path: String, format: String?, child: String?) throws(StrataError) -> any BaseImage {
            guard self.seen.count < Limits.baseImageChainDepthMax else {
                throw ImageErrors.unsupported(
                    child ?? path, "backing chain too deep", "depth_max=\(Limits.baseImageChainDepthMax)",
                    fix: "flatten it with `qemu-img convert -O qcow2`")
            }
            let file = try ImageFile(path: try BaseImages.absolute(path))
            guard self.seen.insert(file.identity).inserted else {
                throw ImageErrors.corrupt(
                    child ?? path, "backing chain loops back to \(file.path)", "depth=\(self.seen.count + 1)",
                    fix: "point the backing file elsewhere with `qemu-img rebase -u -b …`")
            }
            guard try Self.isQcow2(file, format: format) else { return RawImage(file: file) }
            let header = try Qcow2Header(file: file)
            var backing: (any BaseImage)?
            if let name = header.backingName {
                let target = BaseImages.resolve(backing: name, relativeTo: file.path)
                backing = try self.open(path: target, format: header.backingFormat, child: file.path)
            }
            return try Qcow2Image(file: file, header: header, backing: backing)
        }

        /// The format named by the child's header extension, or else probed from the magic.
        private static func isQcow2(_ file: ImageFile, format: String?) throws(StrataError) -> Bool {
            if let format { return format == "qcow2" }
            guard file.size >= 4 else { return false }
            return try file.bytes(at: 0, count: 4) == Qcow2Header.magic
        }
    }
}
