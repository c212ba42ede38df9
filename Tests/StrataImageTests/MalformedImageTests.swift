// Damaged and unsupported images: each must be refused with a StrataError whose message names
// the file and the problem (and the feature, for the unsupported ones), never a trap. The last
// test flips random bytes in the metadata of a small image, seeded, and requires every open
// and read to either succeed or throw StrataError, and proves both outcomes were reached.

import Foundation
import StrataCore
import StrataImage
import StrataTesting
import Testing

@Suite struct MalformedImageTests {
    /// Expects `body` to throw a StrataError of `code` whose message names `path` and holds `words`.
    func expectRefusal(
        _ code: StrataError.Code, naming path: String, _ words: [String],
        sourceLocation: SourceLocation = #_sourceLocation,
        _ body: () throws -> Void
    ) {
        do {
            try body()
            Issue.record("expected a refusal mentioning \(words)", sourceLocation: sourceLocation)
        } catch let error as StrataError {
            #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
            #expect(error.message.contains(path), "\(error)", sourceLocation: sourceLocation)
            for word in words {
                #expect(error.message.contains(word), "\(error)", sourceLocation: sourceLocation)
            }
        } catch {
            Issue.record("expected a StrataError, got \(error)", sourceLocation: sourceLocation)
        }
    }

    /// A 4 MiB qcow2 image with data in its first cluster, in a fresh scratch directory.
    func smallImage(_ options: [String] = []) throws -> (ScratchDirectory, String) {
        let scratch = try ScratchDirectory()
        let path = scratch.file("image.qcow2")
        try Qemu.create(path, size: "4M", options: options)
        try Qemu.io(path, ["write -P 0x5a 0 64k"])
        return (scratch, path)
    }

    @Test func versionFourIsRefused() throws {
        let (scratch, path) = try self.smallImage()
        try Patch.store(4, width: 4, at: 4, in: path)
        self.expectRefusal(.invalidArgument, naming: path, ["qcow2 version 4"]) { _ = try BaseImages.open(path: path) }
        withExtendedLifetime(scratch) {}
    }

    @Test func badMagicWhereQcow2IsNamedIsRefused() throws {
        let (scratch, path) = try self.smallImage()
        try Patch.store(0, width: 4, at: 0, in: path)
        try Qemu.create("top.qcow2", size: "4M", options: ["-u", "-b", "image.qcow2", "-F", "qcow2"], in: scratch.path)
        self.expectRefusal(.corrupt, naming: path, ["bad qcow2 magic"]) {
            _ = try BaseImages.open(path: scratch.file("top.qcow2"))
        }
    }

    @Test func l1TablePastTheEndIsRefused() throws {
        let (scratch, path) = try self.smallImage()
        try Patch.store(1 << 40, width: 8, at: 40, in: path)
        self.expectRefusal(.corrupt, naming: path, ["L1 table lies past the end of the file"]) {
            _ = try BaseImages.open(path: path)
        }
        withExtendedLifetime(scratch) {}
    }

    @Test func anL2EntryOutsideTheFileFailsTheRead() throws {
        let (scratch, path) = try self.smallImage()
        let (_, l2Offset) = try Patch.firstL2Entry(path)
        try Patch.store(1 << 63 | 1 << 40, width: 8, at: l2Offset, in: path)
        let image = try BaseImages.open(path: path)
        var bytes = [UInt8](repeating: 0, count: 4096)
        self.expectRefusal(.corrupt, naming: path, ["L2 entry points outside the file", "guest_offset=0"]) {
            try bytes.withUnsafeMutableBytes { try image.read(at: 0, into: $0) }
        }
        self.expectRefusal(.corrupt, naming: path, ["L2 entry points outside the file"]) {
            _ = try image.allocation(at: 0, length: 4 << 20)
        }
        withExtendedLifetime(scratch) {}
    }

    @Test func aBackingChainThatLoopsIsRefused() throws {
        let scratch = try ScratchDirectory()
        try Qemu.create("a.qcow2", size: "1M", in: scratch.path)
        try Qemu.create("b.qcow2", size: "1M", options: ["-b", "a.qcow2", "-F", "qcow2"], in: scratch.path)
        try Qemu.run("qemu-img", ["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", "a.qcow2"], in: scratch.path)
        self.expectRefusal(.corrupt, naming: scratch.file("a.qcow2"), ["backing chain loops back to", "b.qcow2"]) {
            _ = try BaseImages.open(path: scratch.file("b.qcow2"))
        }
    }

    @Test func aChainDeeperThanTheLimitIsRefused() throws {
        let scratch = try ScratchDirectory()
        try Qemu.create("0.qcow2", size: "1M", in: scratch.path)
        for level in 1...Limits.baseImageChainDepthMax {
            try Qemu.create(
                "\(level).qcow2", size: "1M", options: ["-u", "-b", "\(level - 1).qcow2", "-F", "qcow2"],
                in: scratch.path)
        }
        let deepest = Limits.baseImageChainDepthMax
        self.expectRefusal(.invalidArgument, naming: scratch.path, ["backing chain too deep"]) {
            _ = try BaseImages.open(path: scratch.file("\(deepest).qcow2"))
        }
        #expect(try BaseImages.open(path: scratch.file("\(deepest - 1).qcow2")).layers.count == deepest)
    }

    @Test func aMissingBackingFileIsNamed() throws {
        let scratch = try ScratchDirectory()
        try Qemu.create("top.qcow2", size: "1M", options: ["-u", "-b", "gone.qcow2", "-F", "qcow2"], in: scratch.path)
        self.expectRefusal(.notFound, naming: scratch.file("gone.qcow2"), ["no such file"]) {
            _ = try BaseImages.open(path: scratch.file("top.qcow2"))
        }
    }

    @Test func anUnsupportedBackingFormatIsRefused() throws {
        let scratch = try ScratchDirectory()
        let path = scratch.file("top.qcow2")
        try Qemu.create("top.qcow2", size: "1M", options: ["-u", "-b", "base.vmdk", "-F", "vmdk"], in: scratch.path)
        self.expectRefusal(.invalidArgument, naming: path, ["backing file format \"vmdk\""]) {
            _ = try BaseImages.open(path: path)
        }
    }

    @Test func aBackingFileWithoutAFormatIsProbed() throws {
        let scratch = try ScratchDirectory()
        try Qemu.create("base.qcow2", size: "2M", in: scratch.path)
        try Qemu.io(scratch.file("base.qcow2"), ["write -P 0x42 64k 64k"])
        try Qemu.create("top.qcow2", size: "2M", options: ["-u", "-b", "base.qcow2", "-F", "qcow2"], in: scratch.path)
        // qemu-img always writes the backing format now; older images lack it. Turn the
        // extension into an unknown one, which a reader must skip, so the format is probed.
        var header = try Patch.bytes(scratch.file("top.qcow2"))
        let marker: [UInt8] = [0xE2, 0x79, 0x2A, 0xCA]
        let at = try #require((0..<4096).first { Array(header[$0..<$0 + 4]) == marker })
        header[at] = 0x12
        try Patch.write(header, to: scratch.file("top.qcow2"))
        let image = try BaseImages.open(path: scratch.file("top.qcow2"))
        #expect(image.layers.map(\.format) == ["qcow2", "qcow2"])
        let bytes = try readAll(image)
        #expect(bytes[(64 << 10)..<(128 << 10)].allSatisfy { $0 == 0x42 })
        #expect(
            try image.allocation(at: 0, length: 2 << 20) == [
                MappingExtent(offset: 0, length: 64 << 10, mapped: false),
                MappingExtent(offset: 64 << 10, length: 64 << 10, mapped: true),
                MappingExtent(offset: 128 << 10, length: (2 << 20) - (128 << 10), mapped: false),
            ])
    }

    @Test func aCompressedClusterThatDoesNotInflateFailsTheRead() throws {
        let scratch = try ScratchDirectory()
        let source = scratch.file("source.raw")
        let path = scratch.file("image.qcow2")
        try Patch.write((0..<(256 << 10)).map { UInt8(truncatingIfNeeded: 0x41 + $0 / 9 % 26) }, to: source)
        try Qemu.run("qemu-img", ["convert", "-q", "-c", "-f", "raw", "-O", "qcow2", source, path])
        let (entry, _) = try Patch.firstL2Entry(path)
        #expect(entry & 1 << 62 != 0, "the first cluster was not stored compressed")
        let host = entry & ((1 << 54) - 1)  // 64 KiB clusters: offset bits 0…53
        var bytes = try Patch.bytes(path)
        for index in Int(host)..<Int(host) + 64 { bytes[index] = 0xFF }
        try Patch.write(bytes, to: path)
        let image = try BaseImages.open(path: path)
        var buffer = [UInt8](repeating: 0, count: 512)
        self.expectRefusal(.corrupt, naming: path, ["does not inflate", "host_offset=\(host)"]) {
            try buffer.withUnsafeMutableBytes { try image.read(at: 100, into: $0) }
        }
    }

    @Test func encryptionIsRefused() throws {
        let (scratch, path) = try self.smallImage()
        try Patch.store(1, width: 4, at: 32, in: path)
        self.expectRefusal(.invalidArgument, naming: path, ["encrypted", "crypt_method=1"]) {
            _ = try BaseImages.open(path: path)
        }
        withExtendedLifetime(scratch) {}
    }

    @Test func anExternalDataFileIsRefused() throws {
        let scratch = try ScratchDirectory()
        let path = scratch.file("image.qcow2")
        try Qemu.create(path, size: "1M", options: ["-o", "data_file=\(scratch.file("data.raw"))"])
        self.expectRefusal(.invalidArgument, naming: path, ["external data file"]) {
            _ = try BaseImages.open(path: path)
        }
    }

    @Test func extendedL2IsRefused() throws {
        let (scratch, path) = try self.smallImage(["-o", "extended_l2=on"])
        self.expectRefusal(.invalidArgument, naming: path, ["extended L2"]) { _ = try BaseImages.open(path: path) }
        withExtendedLifetime(scratch) {}
    }

    @Test func zstdCompressionIsRefused() throws {
        let (scratch, path) = try self.smallImage(["-o", "compression_type=zstd"])
        self.expectRefusal(.invalidArgument, naming: path, ["zstd"]) { _ = try BaseImages.open(path: path) }
        withExtendedLifetime(scratch) {}
    }

    @Test func anUnknownIncompatibleFeatureIsRefused() throws {
        let (scratch, path) = try self.smallImage()
        try Patch.store(1 << 5, width: 8, at: 72, in: path)
        self.expectRefusal(.invalidArgument, naming: path, ["unknown qcow2 incompatible feature", "bits=5"]) {
            _ = try BaseImages.open(path: path)
        }
        withExtendedLifetime(scratch) {}
    }

    @Test func theCorruptBitIsRefusedAndTheDirtyBitIsRead() throws {
        let (scratch, path) = try self.smallImage()
        try Patch.store(1 << 1, width: 8, at: 72, in: path)
        self.expectRefusal(.corrupt, naming: path, ["marked corrupt"]) { _ = try BaseImages.open(path: path) }
        try Patch.store(1 << 0, width: 8, at: 72, in: path)
        let bytes = try readAll(try BaseImages.open(path: path))
        #expect(bytes[0..<(64 << 10)].allSatisfy { $0 == 0x5A })
        #expect(bytes[(64 << 10)...].allSatisfy { $0 == 0 })
        withExtendedLifetime(scratch) {}
    }

    @Test(arguments: [50, 90])
    func aTruncatedHeaderIsRefused(length: Int) throws {
        let (scratch, path) = try self.smallImage()
        try Patch.write(Array(try Patch.bytes(path)[0..<length]), to: path)
        self.expectRefusal(.corrupt, naming: path, ["truncated qcow2 header"]) { _ = try BaseImages.open(path: path) }
        withExtendedLifetime(scratch) {}
    }

    /// Opens and reads the whole image (bounded), returning whether it succeeded; any error
    /// other than StrataError is recorded.
    func survives(_ path: String) -> Bool {
        do {
            let image = try BaseImages.open(path: path)
            let size = min(image.virtualSize, 4 << 20)
            var bytes = [UInt8](repeating: 0, count: 64 << 10)
            var offset: UInt64 = 0
            while offset < size {
                try bytes.withUnsafeMutableBytes { try image.read(at: offset, into: $0) }
                offset += UInt64(bytes.count)
            }
            _ = try image.allocation(at: 0, length: min(image.virtualSize, 1 << 40))
            return true
        } catch is StrataError {
            return false
        } catch {
            Issue.record("not a StrataError: \(error)")
            return false
        }
    }

    @Test func randomDamageNeverTraps() throws {
        let scratch = try ScratchDirectory()
        let source = scratch.file("source.raw")
        let pristinePath = scratch.file("pristine.qcow2")
        try BaseImageTests.mixedContents(source, size: 1 << 20)
        try Qemu.run(
            "qemu-img",
            ["convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4k", source, pristinePath])
        try Qemu.io(pristinePath, ["write -P 0x31 512k 16k", "write -z 600k 8k"])
        let pristine = try Patch.bytes(pristinePath)
        let damaged = scratch.file("damaged.qcow2")
        let region = min(pristine.count, 48 << 10)  // header, L1, refcounts and the L2 tables
        var random = SeededRandom(seed: 2024)
        var opened = 0
        var refused = 0
        for _ in 0..<300 {
            var bytes = pristine
            for _ in 0...(random.next() % 4) {
                bytes[Int(random.next() % UInt64(region))] ^= UInt8(truncatingIfNeeded: random.next() | 1)
            }
            try Patch.write(bytes, to: damaged)
            if self.survives(damaged) { opened += 1 } else { refused += 1 }
        }
        #expect(opened > 0, "no damaged image opened: the damage never reached the data path")
        #expect(refused > 0, "no damaged image was refused: the damage never reached the metadata checks")
    }
}
