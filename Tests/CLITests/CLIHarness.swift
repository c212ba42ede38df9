// Test support for the CLI contract suite: finding the built `strata` executable, running it
// as a child process, giving each test its own pool directory, parsing `--json` output, and
// making reproducible test images.
//
// The suite tests the executable a user runs, not the command structs: exit status, stdout,
// stderr and what is left on disk are the contract [thin-provisioning-tools `tests/`]. A
// missing binary fails every test with the fix (`swift build`); it never skips, so a suite
// that ran nothing can never look green.

import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

// MARK: Locating the executable

/// Finds the `strata` executable built next to this test bundle.
enum StrataExecutable {
    /// The executable, or nil when no build produced one.
    static let url: URL? = Self.locate()

    /// Where `locate` looked, for the failure message.
    static let searched: [String] = Self.candidateDirectories().map(\.path)

    /// Directories the products of this build live in, nearest first. The test bundle lives in
    /// `<scratch>/debug/` (Linux: `X.xctest` is the executable itself; macOS: the bundle's
    /// executable is three levels inside it), so walk up from the running test executable.
    static func candidateDirectories(filePath: String = #filePath) -> [URL] {
        var starts: [URL] = []
        if let first = ProcessInfo.processInfo.arguments.first, !first.isEmpty {
            let executable = URL(fileURLWithPath: first)
            starts.append(executable.resolvingSymlinksInPath().deletingLastPathComponent())
            starts.append(executable.deletingLastPathComponent())
        }
        if let executable = Bundle.main.executableURL {
            starts.append(executable.resolvingSymlinksInPath().deletingLastPathComponent())
        }
        starts.append(Bundle.main.bundleURL)
        // macOS: a helper (xctest, swiftpm-testing-helper) loads `X.xctest`, named in the
        // arguments and among the loaded bundles; the products are that bundle's siblings.
        let bundlePaths =
            ProcessInfo.processInfo.arguments.filter { $0.contains(".xctest") }
            + Bundle.allBundles.map(\.bundlePath).filter { $0.contains(".xctest") }
        for path in bundlePaths {
            guard let range = path.range(of: ".xctest") else { continue }
            let bundle = URL(fileURLWithPath: String(path[..<range.upperBound]))
            starts.append(bundle.deletingLastPathComponent())
        }
        var directories: [URL] = []
        for start in starts {
            var directory = start.standardizedFileURL
            for _ in 0..<4 {
                if !directories.contains(directory) { directories.append(directory) }
                let parent = directory.deletingLastPathComponent()
                if parent == directory { break }
                directory = parent
            }
        }
        // Fallback: the default scratch path of the package this file belongs to.
        let packageRoot = URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        directories.append(packageRoot.appendingPathComponent(".build/debug"))
        return directories
    }

    static func locate() -> URL? {
        for directory in Self.candidateDirectories() {
            let candidate = directory.appendingPathComponent("strata")
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: candidate.path, isDirectory: &isDirectory),
                !isDirectory.boolValue, FileManager.default.isExecutableFile(atPath: candidate.path)
            else { continue }
            return candidate
        }
        return nil
    }

    /// The executable; records a failure naming the fix when it is missing.
    static func require(sourceLocation: SourceLocation = #_sourceLocation) throws -> URL {
        let places = Self.searched.joined(separator: ", ")
        return try #require(
            Self.url, "the `strata` executable was not found (looked in \(places)); run `swift build` first",
            sourceLocation: sourceLocation)
    }
}

// MARK: Running it

/// What one run of `strata` did.
struct CLIResult: CustomStringConvertible {
    let arguments: [String]
    let status: Int32
    let stdout: String
    let stderr: String
    /// True when the process died of a signal (a trap, a crash): never acceptable.
    let signaled: Bool
    let timedOut: Bool

    var output: String { self.stdout + self.stderr }

    var description: String {
        "strata \(self.arguments.joined(separator: " ")) -> \(self.signaled ? "signal" : "status") \(self.status)"
            + "\n--- stdout ---\n\(self.stdout)--- stderr ---\n\(self.stderr)"
    }
}

/// The longest any single command may take before the test fails (debug build, small pools).
let commandTimeoutSeconds: Double = 60

/// Runs `strata` with `args`. The environment is the test's own minus `STRATA_POOL`, plus `env`.
/// Output goes to files, not pipes, so a chatty child can never block on a full pipe.
func run(
    _ args: [String], env: [String: String]? = nil, cwd: URL? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) throws -> CLIResult {
    let binary = try StrataExecutable.require(sourceLocation: sourceLocation)
    let scratch = FileManager.default.temporaryDirectory
        .appendingPathComponent("strata-cli-out-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }
    let stdoutURL = scratch.appendingPathComponent("stdout")
    let stderrURL = scratch.appendingPathComponent("stderr")
    _ = FileManager.default.createFile(atPath: stdoutURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
    let stdoutHandle = try FileHandle(forWritingTo: stdoutURL)
    let stderrHandle = try FileHandle(forWritingTo: stderrURL)

    let process = Process()
    process.executableURL = binary
    process.arguments = args
    var environment = ProcessInfo.processInfo.environment
    environment["STRATA_POOL"] = nil
    if let env { environment.merge(env) { _, new in new } }
    process.environment = environment
    process.currentDirectoryURL = cwd ?? FileManager.default.temporaryDirectory
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = stdoutHandle
    process.standardError = stderrHandle
    try process.run()

    let deadline = Date().addingTimeInterval(commandTimeoutSeconds)
    var timedOut = false
    while process.isRunning {
        if Date() > deadline {
            timedOut = true
            process.terminate()
            break
        }
        usleep(1000)
    }
    process.waitUntilExit()
    try stdoutHandle.close()
    try stderrHandle.close()
    let result = CLIResult(
        arguments: args, status: process.terminationStatus,
        stdout: String(decoding: try Data(contentsOf: stdoutURL), as: UTF8.self),
        stderr: String(decoding: try Data(contentsOf: stderrURL), as: UTF8.self),
        signaled: process.terminationReason == .uncaughtSignal, timedOut: timedOut)
    if timedOut {
        Issue.record("timed out after \(commandTimeoutSeconds)s: \(result)", sourceLocation: sourceLocation)
    }
    return result
}

// MARK: Expectations on a result

/// Expects exit status 0, showing the whole run when it is not.
func expectSuccess(_ result: CLIResult, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(!result.signaled && result.status == 0, "\(result)", sourceLocation: sourceLocation)
}

/// Expects a clean refusal: exited (no signal), non-zero, and said why on stderr.
func expectRefused(
    _ result: CLIResult, status: Int32? = nil, sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(!result.signaled, "killed by a signal: \(result)", sourceLocation: sourceLocation)
    #expect(result.status != 0, "expected a non-zero exit: \(result)", sourceLocation: sourceLocation)
    if let status {
        #expect(result.status == status, "expected exit \(status): \(result)", sourceLocation: sourceLocation)
    }
    #expect(
        !result.stderr.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty,
        "expected a message on stderr: \(result)",
        sourceLocation: sourceLocation)
}

/// ArgumentParser's exit status for a usage error (EX_USAGE).
let usageErrorStatus: Int32 = 64

// MARK: A pool directory per test

/// A unique temporary directory holding one pool (`pool/`) and the test's image files.
/// Removed when the sandbox is released.
final class Sandbox {
    let root: URL
    var pool: String { self.root.appendingPathComponent("pool").path }
    var poolFile: String { self.pool + "/pool.strata" }

    init() throws {
        self.root = FileManager.default.temporaryDirectory
            .appendingPathComponent("strata-cli-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: self.root, withIntermediateDirectories: true)
    }

    /// A sandbox with an initialized 256 MiB pool (64 KiB chunks).
    static func withPool(sourceLocation: SourceLocation = #_sourceLocation) throws -> Sandbox {
        let sandbox = try Sandbox()
        let result = try sandbox.strata(["pool", "init", "--size", "256M"], sourceLocation: sourceLocation)
        try #require(result.status == 0, "pool init failed: \(result)", sourceLocation: sourceLocation)
        return sandbox
    }

    /// The state of the shared fixture, when this sandbox is a copy of it and nothing has run yet.
    private(set) var fixtureBaseline: PoolState?

    /// The common fixture: a pool with `vm1` (1 MiB, its first 64 KiB written), its snapshot
    /// `vm1@s1`, an empty `vm2` (2 MiB), and an image file `image.img` (64 KiB) in the sandbox.
    /// Built once by the CLI, then copied (sparsely) into each test's own directory, which is
    /// much cheaper than four more child processes per test case.
    static func prepared(sourceLocation: SourceLocation = #_sourceLocation) throws -> Sandbox {
        let fixture = try Fixture.shared.get()
        let sandbox = try Sandbox()
        try FileManager.default.createDirectory(atPath: sandbox.pool, withIntermediateDirectories: true)
        try sparseCopy(from: fixture.root + "/pool/pool.strata", to: sandbox.poolFile)
        try sparseCopy(from: fixture.root + "/image.img", to: sandbox.path("image.img"))
        sandbox.fixtureBaseline = fixture.state
        return sandbox
    }

    /// The state before a refused command: the fixture's, or else read now.
    func baseline(sourceLocation: SourceLocation = #_sourceLocation) throws -> PoolState {
        if let baseline = self.fixtureBaseline { return baseline }
        return try self.state(sourceLocation: sourceLocation)
    }

    deinit { try? FileManager.default.removeItem(at: self.root) }

    /// Replaces the placeholders IMAGE (the fixture's image), OUT (an export target that does
    /// not exist yet) and MISSING (a file that does not exist) with paths in the sandbox.
    func substitute(_ args: [String]) -> [String] {
        args.map { argument in
            switch argument {
            case "IMAGE": return self.path("image.img")
            case "OUT": return self.path("out.img")
            case "MISSING": return self.path("missing.img")
            default: return argument
            }
        }
    }

    /// A path inside the sandbox.
    func path(_ name: String) -> String { self.root.appendingPathComponent(name).path }

    /// Runs `strata ARGS --pool POOL` with the sandbox as working directory.
    func strata(
        _ args: [String], env: [String: String]? = nil, sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> CLIResult {
        try run(args + ["--pool", self.pool], env: env, cwd: self.root, sourceLocation: sourceLocation)
    }

    /// Runs a command that must succeed and returns its stdout.
    @discardableResult
    func ok(_ args: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let result = try self.strata(args, sourceLocation: sourceLocation)
        try #require(!result.signaled && result.status == 0, "\(result)", sourceLocation: sourceLocation)
        return result.stdout
    }

    /// Parses the `--json` output of a command that must succeed.
    func json(_ args: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> Any {
        let stdout = try self.ok(args + ["--json"], sourceLocation: sourceLocation)
        return try parseJSON(stdout, sourceLocation: sourceLocation)
    }

    func poolStatus(sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
        try #require(
            try self.json(["pool", "status"], sourceLocation: sourceLocation) as? [String: Any],
            "pool status --json is not an object", sourceLocation: sourceLocation)
    }

    func volumes(sourceLocation: SourceLocation = #_sourceLocation) throws -> [[String: Any]] {
        try #require(
            try self.json(["volume", "list"], sourceLocation: sourceLocation) as? [[String: Any]],
            "volume list --json is not an array of objects", sourceLocation: sourceLocation)
    }

    func volume(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any]? {
        try self.volumes(sourceLocation: sourceLocation).first { $0["name"] as? String == name }
    }

    func snapshots(_ volume: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws -> [[String: Any]]
    {
        try #require(
            try self.json(["snapshot", "list"] + (volume.map { [$0] } ?? []), sourceLocation: sourceLocation)
                as? [[String: Any]],
            "snapshot list --json is not an array of objects", sourceLocation: sourceLocation)
    }

    /// Everything a refused command must leave as it was: the volume and snapshot listings, and
    /// both superblock pages byte for byte (a refused command commits nothing).
    func state(sourceLocation: SourceLocation = #_sourceLocation) throws -> PoolState {
        let volumes = try self.ok(["volume", "list", "--json"], sourceLocation: sourceLocation)
        let snapshots = try self.ok(["snapshot", "list", "--json"], sourceLocation: sourceLocation)
        let superblocks = try readBytes(self.poolFile, at: 0, count: 2 * pagesize)
        return PoolState(volumes: volumes, snapshots: snapshots, superblocks: superblocks)
    }

    /// Writes `bytes` to a file in the sandbox and returns its path.
    @discardableResult
    func writeFile(_ name: String, _ bytes: [UInt8]) throws -> String {
        let path = self.path(name)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    func readFile(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Exports `source` and returns the file's bytes.
    func export(_ source: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [UInt8] {
        let path = self.path("export-\(UUID().uuidString).img")
        try self.ok(["export", source, path], sourceLocation: sourceLocation)
        return try self.readFile(path)
    }
}

/// What a refused command must not change.
struct PoolState: Equatable, CustomStringConvertible {
    let volumes: String
    let snapshots: String
    let superblocks: [UInt8]

    var description: String {
        let generations = [0, 1].map { slot -> UInt64 in
            let offset = slot * pagesize + 24
            guard self.superblocks.count >= offset + 8 else { return 0 }
            return (0..<8).reduce(UInt64(0)) { $0 | UInt64(self.superblocks[offset + $1]) << (8 * UInt64($1)) }
        }
        return "superblock generations \(generations)\nvolumes: \(self.volumes)\nsnapshots: \(self.snapshots)"
    }
}

/// The size of a metadata page in the pool file.
let pagesize = 4096

// MARK: The shared fixture

struct FixtureError: Error, CustomStringConvertible, Sendable {
    let description: String
}

/// A pool built once per test process by the CLI; `Sandbox.prepared()` copies it.
struct Fixture: Sendable {
    let root: String
    let state: PoolState

    static let shared: Result<Fixture, FixtureError> = Result { () throws(FixtureError) in
        do {
            return try Self.build()
        } catch let error as FixtureError {
            throw error
        } catch {
            throw FixtureError(description: "building the fixture failed: \(error)")
        }
    }

    private static func build() throws -> Fixture {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("strata-cli-fixture-\(getpid())").path
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(atPath: fixtureRoot()) }
        let image = root + "/image.img"
        try Data(randomBytes(64 * KiB, seed: 11)).write(to: URL(fileURLWithPath: image))
        let pool = ["--pool", root + "/pool"]
        for args in [
            ["pool", "init", "--size", "256M"], ["volume", "create", "vm1", "--size", "1M"], ["import", image, "vm1"],
            ["snapshot", "create", "vm1@s1"], ["volume", "create", "vm2", "--size", "2M"],
        ] {
            let result = try run(args + pool, cwd: URL(fileURLWithPath: root))
            guard result.status == 0, !result.signaled else { throw FixtureError(description: "fixture: \(result)") }
        }
        func listing(_ args: [String]) throws -> String {
            let result = try run(args + pool, cwd: URL(fileURLWithPath: root))
            guard result.status == 0, !result.signaled else { throw FixtureError(description: "fixture: \(result)") }
            return result.stdout
        }
        let state = PoolState(
            volumes: try listing(["volume", "list", "--json"]), snapshots: try listing(["snapshot", "list", "--json"]),
            superblocks: try readBytes(root + "/pool/pool.strata", at: 0, count: 2 * pagesize))
        return Fixture(root: root, state: state)
    }
}

/// Where the fixture lives (a function, so the `atexit` handler captures nothing).
func fixtureRoot() -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("strata-cli-fixture-\(getpid())").path
}

// MARK: Files

/// Reads `count` bytes at `offset` of a file.
func readBytes(_ path: String, at offset: Int, count: Int) throws -> [UInt8] {
    let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
    defer { try? handle.close() }
    try handle.seek(toOffset: UInt64(offset))
    return [UInt8](try handle.read(upToCount: count) ?? Data())
}

/// Writes `bytes` at `offset` of an existing file, in place.
func writeBytes(_ path: String, at offset: Int, _ bytes: [UInt8]) throws {
    let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
    defer { try? handle.close() }
    try handle.seek(toOffset: UInt64(offset))
    try handle.write(contentsOf: Data(bytes))
    try handle.synchronize()
}

#if os(Linux)
    private let seekData: Int32 = 3
    private let seekHole: Int32 = 4
#else
    private let seekHole: Int32 = 3
    private let seekData: Int32 = 4
#endif

/// Copies a file keeping its holes: only the data extents are read and written, so copying a
/// 256 MiB pool that holds a few MiB costs a few MiB.
func sparseCopy(from source: String, to target: String) throws {
    let input = open(source, O_RDONLY)
    guard input >= 0 else { throw FixtureError(description: "open \(source): errno \(errno)") }
    defer { close(input) }
    let output = open(target, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard output >= 0 else { throw FixtureError(description: "create \(target): errno \(errno)") }
    defer { close(output) }
    var info = stat()
    guard fstat(input, &info) == 0, ftruncate(output, info.st_size) == 0 else {
        throw FixtureError(description: "size \(target): errno \(errno)")
    }
    let size = info.st_size
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    var offset: off_t = 0
    while offset < size {
        var start = lseek(input, offset, seekData)
        if start < 0 {
            if errno == ENXIO { break }  // only a hole remains
            start = offset  // no SEEK_DATA here: copy densely
        }
        var end = lseek(input, start, seekHole)
        if end < 0 { end = size }
        var position = start
        while position < end {
            let want = Int(min(off_t(buffer.count), end - position))
            let got = buffer.withUnsafeMutableBytes { pread(input, $0.baseAddress, want, position) }
            guard got > 0 else { throw FixtureError(description: "read \(source): errno \(errno)") }
            let put = buffer.withUnsafeBytes { pwrite(output, $0.baseAddress, got, position) }
            guard put == got else { throw FixtureError(description: "write \(target): errno \(errno)") }
            position += off_t(got)
        }
        offset = end
    }
}

// MARK: Common checks

/// Bytes of the 64 KiB chunks of `image` that hold anything but zeros.
func nonZeroChunkBytes(_ image: [UInt8], chunk: Int = 64 * KiB) -> UInt64 {
    stride(from: 0, to: image.count, by: chunk).reduce(UInt64(0)) { total, start in
        let end = min(start + chunk, image.count)
        return total + (image[start..<end].contains { $0 != 0 } ? UInt64(chunk) : 0)
    }
}

extension Sandbox {
    /// Expects `strata check` to exit 0 and report no problems.
    func expectClean(sourceLocation: SourceLocation = #_sourceLocation) throws {
        let result = try self.strata(["check", "--json"], sourceLocation: sourceLocation)
        #expect(!result.signaled && result.status == 0, "check is not clean: \(result)", sourceLocation: sourceLocation)
        let report = try parseJSON(result.stdout, sourceLocation: sourceLocation) as? [String: Any]
        #expect((report?["problems"] as? [Any])?.isEmpty == true, "\(result)", sourceLocation: sourceLocation)
    }

    func dataUsedBytes(sourceLocation: SourceLocation = #_sourceLocation) throws -> UInt64 {
        try #require(
            uint(try self.poolStatus(sourceLocation: sourceLocation)["dataUsedBytes"]), sourceLocation: sourceLocation)
    }

    /// Writes `bytes` to a new image file and imports it (creating the volume when `create`).
    func importImage(
        _ bytes: [UInt8], into volume: String, create: Bool = false, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let path = try self.writeFile("import-\(UUID().uuidString).img", bytes)
        try self.ok(["import", path, volume] + (create ? ["--create"] : []), sourceLocation: sourceLocation)
    }
}

// MARK: JSON

func parseJSON(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> Any {
    do {
        return try JSONSerialization.jsonObject(with: Data(text.utf8), options: [])
    } catch {
        Issue.record("output is not JSON (\(error)):\n\(text)", sourceLocation: sourceLocation)
        throw error
    }
}

/// A JSON number as `UInt64` (JSONSerialization yields `NSNumber` on every platform).
func uint(_ value: Any?) -> UInt64? {
    guard let number = value as? NSNumber else { return nil }
    return number.uint64Value
}

/// Expects `object` to carry every key in `keys`.
func expectKeys(
    _ object: [String: Any], _ keys: [String], _ what: String, sourceLocation: SourceLocation = #_sourceLocation
) {
    let missing = keys.filter { object[$0] == nil }
    #expect(
        missing.isEmpty, "\(what) lacks keys \(missing); has \(object.keys.sorted())", sourceLocation: sourceLocation)
}

// MARK: Images

/// SplitMix64: a small seeded generator so every image, and every failure, is reproducible.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { self.state = seed }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// `count` pseudo-random bytes from `seed`, none of the 8-byte words all zero.
func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var generator = SeededGenerator(seed: seed)
    var bytes = [UInt8](repeating: 0, count: count)
    bytes.withUnsafeMutableBytes { raw in
        var offset = 0
        while offset < count {
            var word = generator.next() | 1
            let take = min(8, count - offset)
            withUnsafeBytes(of: &word) { source in
                for index in 0..<take { raw[offset + index] = source[index] }
            }
            offset += take
        }
    }
    return bytes
}

/// Sets `range` of `bytes` to zero (a hole in the image).
func punchHole(_ bytes: inout [UInt8], _ range: Range<Int>) {
    for index in range { bytes[index] = 0 }
}

/// Rounds up to a whole 512-byte sector.
func alignedUp512(_ value: Int) -> Int { (value + 511) / 512 * 512 }

let KiB = 1024
let MiB = 1024 * 1024

/// Expects an exported image to hold `expected` followed by zeros, `size` bytes in all.
func expectImage(
    _ exported: [UInt8], equals expected: [UInt8], size: Int, _ what: String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(
        exported.count == size, "\(what): export is \(exported.count) bytes, expected \(size)",
        sourceLocation: sourceLocation)
    let prefix = min(expected.count, exported.count)
    let same = exported.withUnsafeBytes { left in
        expected.withUnsafeBytes { right in prefix == 0 || memcmp(left.baseAddress!, right.baseAddress!, prefix) == 0 }
    }
    if !same, let first = (0..<prefix).first(where: { exported[$0] != expected[$0] }) {
        Issue.record("\(what): first differing byte at offset \(first)", sourceLocation: sourceLocation)
    }
    if exported.count > expected.count {
        let zeros = [UInt8](repeating: 0, count: exported.count - expected.count)
        let clean = exported.withUnsafeBytes { left in
            zeros.withUnsafeBytes { memcmp(left.baseAddress! + expected.count, $0.baseAddress!, zeros.count) == 0 }
        }
        if !clean, let nonZero = (expected.count..<exported.count).first(where: { exported[$0] != 0 }) {
            Issue.record(
                "\(what): byte at offset \(nonZero), past the data, is not zero", sourceLocation: sourceLocation)
        }
    }
}
