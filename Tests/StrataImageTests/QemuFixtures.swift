// Test support: a scratch directory per test, QEMU's tools run as real clients (qemu-img,
// qemu-io), and what QEMU itself says an image holds (its raw conversion and its allocation
// map) so every decoder answer is checked against the reference implementation.
//
// The tools are required, not optional: the project's test script installs qemu-utils before
// the build, so a missing tool fails the test with the fix instead of skipping it.

import Foundation
import StrataCore
import StrataImage
import Testing

/// A directory removed when the last reference goes.
final class ScratchDirectory {
    let path: String

    init() throws {
        let base = FileManager.default.temporaryDirectory.path
        self.path = base + "/strata-image-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: self.path, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: self.path)
    }

    /// `name` inside the directory.
    func file(_ name: String) -> String { self.path + "/" + name }
}

/// A QEMU tool failed, or is missing.
struct ToolFailure: Error, CustomStringConvertible {
    let description: String
}

enum Qemu {
    /// Runs `tool` (looked up on PATH and in /usr/bin) with `arguments` in `directory`; returns its stdout.
    @discardableResult
    static func run(_ tool: String, _ arguments: [String], in directory: String? = nil) throws -> Data {
        let searched = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        guard
            let executable = (searched + ["/usr/bin"]).map({ $0 + "/" + tool })
                .first(where: { FileManager.default.isExecutableFile(atPath: $0) })
        else {
            throw ToolFailure(description: "\(tool) is not installed: install qemu-utils (apt-get install qemu-utils)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        let errorText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ToolFailure(
                description:
                    "\(tool) \(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(errorText)")
        }
        return data
    }

    /// `qemu-img create -f qcow2 [options] path size`.
    static func create(_ path: String, size: String, options: [String] = [], in directory: String? = nil) throws {
        try self.run("qemu-img", ["create", "-q", "-f", "qcow2"] + options + [path, size], in: directory)
    }

    /// Runs each qemu-io command (e.g. "write -P 0xab 0 64k") against the image.
    static func io(_ path: String, format: String = "qcow2", _ commands: [String]) throws {
        try self.run("qemu-io", ["-f", format] + commands.flatMap { ["-c", $0] } + [path])
    }

    /// The image's disk contents as QEMU reads them (`qemu-img convert -O raw`).
    static func rawContents(_ path: String, scratch: ScratchDirectory) throws -> [UInt8] {
        let target = scratch.file("expected-\(UUID().uuidString).raw")
        defer { try? FileManager.default.removeItem(atPath: target) }
        try self.run("qemu-img", ["convert", "-O", "raw", path, target])
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: target)))
    }

    private struct MapEntry: Decodable {
        let start: UInt64
        let length: UInt64
        let data: Bool
    }

    /// The ranges `qemu-img map --output=json` reports as data, adjacent ones merged.
    static func dataRanges(_ path: String) throws -> [Range<UInt64>] {
        let entries = try JSONDecoder().decode(
            [MapEntry].self, from: try self.run("qemu-img", ["map", "--output=json", path]))
        return merge(entries.filter(\.data).map { $0.start..<$0.start + $0.length })
    }
}

/// Adjacent ranges joined.
func merge(_ ranges: [Range<UInt64>]) -> [Range<UInt64>] {
    var merged: [Range<UInt64>] = []
    for range in ranges where !range.isEmpty {
        if let last = merged.last, last.upperBound == range.lowerBound {
            merged[merged.count - 1] = last.lowerBound..<range.upperBound
        } else {
            merged.append(range)
        }
    }
    return merged
}

/// Byte surgery on image files, for the malformed-image tests.
enum Patch {
    static func bytes(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    static func readU64(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        bytes[offset..<offset + 8].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Stores `value` big-endian in `width` bytes at `offset` of the file.
    static func store(_ value: UInt64, width: Int, at offset: Int, in path: String) throws {
        var bytes = try self.bytes(path)
        for index in 0..<width {
            bytes[offset + index] = UInt8(truncatingIfNeeded: value >> UInt64(8 * (width - 1 - index)))
        }
        try self.write(bytes, to: path)
    }

    /// The L2 entry for guest cluster 0 and where it is stored: (entry, file offset).
    static func firstL2Entry(_ path: String) throws -> (entry: UInt64, at: Int) {
        let bytes = try self.bytes(path)
        let l1Offset = Int(self.readU64(bytes, at: 40))
        let l2Offset = Int(self.readU64(bytes, at: l1Offset) & 0x00FF_FFFF_FFFF_FE00)
        return (self.readU64(bytes, at: l2Offset), l2Offset)
    }
}

/// The first index where `actual` and `expected` differ (or the shorter length), nil when equal.
/// Compared here rather than with `#expect(a == b)`, whose failure report diffs whole megabyte
/// arrays element by element and takes minutes.
func firstDifference(_ actual: [UInt8], _ expected: ArraySlice<UInt8>) -> Int? {
    let expected = Array(expected)
    if actual == expected { return nil }
    return (0..<min(actual.count, expected.count)).first { actual[$0] != expected[$0] }
        ?? min(actual.count, expected.count)
}

/// Reads all of `image` through the decoder.
func readAll(_ image: any BaseImage) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0xEE, count: Int(image.virtualSize))
    try bytes.withUnsafeMutableBytes { try image.read(at: 0, into: $0) }
    return bytes
}

/// The ranges the decoder reports mapped over the whole image.
func mappedRanges(_ image: any BaseImage) throws -> [Range<UInt64>] {
    let extents = try image.allocation(at: 0, length: image.virtualSize)
    var cursor: UInt64 = 0
    for (index, extent) in extents.enumerated() {
        #expect(extent.offset == cursor, "extents leave a gap or overlap at \(cursor)")
        #expect(extent.length > 0, "empty extent at \(cursor)")
        #expect(index == 0 || extents[index - 1].mapped != extent.mapped, "unmerged extents at \(cursor)")
        cursor = extent.offset + extent.length
    }
    #expect(cursor == image.virtualSize, "extents end at \(cursor), not at the virtual size \(image.virtualSize)")
    return merge(extents.filter(\.mapped).map { $0.offset..<$0.offset + $0.length })
}
