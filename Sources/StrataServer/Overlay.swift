// `strata overlay FILE` and `strata serve --overlay FILE`: the one-command setup of a writable
// disk over an image file, like `nbdkit --filter=cow file FILE` but persistent and
// snapshottable. The volume is created over FILE the first time and reused afterwards (found
// by its base path), so running the command again serves the same disk with its writes.

import Foundation
import StrataCore

public enum Overlay {
    /// The volume over `file` in `pool`: the one named `name` (or the file's name, cleaned to a
    /// valid volume name) when it exists over the same file, else a new one.
    /// - Throws: `.alreadyExists` when the name is taken by a volume over something else; the
    ///   image's errors naming the file.
    public static func ensure(pool: Pool, file: String, name: String?) throws(StrataError) -> (name: String, created: Bool) {
        let path = URL(fileURLWithPath: file, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
            .standardizedFileURL.path
        let volumes = try pool.listVolumes()
        if name == nil, let existing = volumes.first(where: { $0.base == path }) {
            return (existing.name, false)
        }
        let volume = name ?? Self.volumeName(for: path)
        if let existing = volumes.first(where: { $0.name == volume }) {
            guard existing.base == path else {
                throw StrataError(
                    .alreadyExists,
                    "overlay \(path): volume \(volume) exists over \(existing.base ?? "no base image"); choose another --name"
                )
            }
            return (volume, false)
        }
        try pool.createVolume(volume, size: nil, basePath: path)
        try pool.flush()
        return (volume, true)
    }

    /// A valid volume name from a file name: its base name without the extension, with every
    /// character outside `[A-Za-z0-9._-]` replaced by `-`, at most 64 bytes.
    static func volumeName(for path: String) -> String {
        let stem = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        let cleaned = String(stem.unicodeScalars.map { scalar -> Character in
            let ok = scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || "._-".unicodeScalars.contains(scalar))
            return ok ? Character(scalar) : "-"
        }.prefix(Limits.nameBytesMax))
        return Names.isValid(cleaned) ? cleaned : "overlay"
    }
}
