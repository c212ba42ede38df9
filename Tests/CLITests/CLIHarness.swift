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
        try #require(
            Self.url != nil,
            "the `strata` executable was not found (looked in \(Self.searched.joined(separator: ", "))); run `swift build` first",
            sourceLocation: sourceLocation)
        return Self.url!
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
        !result.stderr.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "expected a message on stderr: \(result)",
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

    /// The common fixture: a pool with `vm1` (1 MiB, its first 64 KiB written), its snapshot
    /// `vm1@s1`, and an image file `image.img` in the sandbox.
    static func prepared(sourceLocation: SourceLocation = #_sourceLocation) throws -> Sandbox {
        let sandbox = try Sandbox.withPool(sourceLocation: sourceLocation)
        try sandbox.ok(["volume", "create", "vm1", "--size", "1M"], sourceLocation: sourceLocation)
        let image = try sandbox.writeFile("image.img", randomBytes(64 * KiB, seed: 11))
        try sandbox.ok(["import", image, "vm1"], sourceLocation: sourceLocation)
        try sandbox.ok(["snapshot", "create", "vm1@s1"], sourceLocation: sourceLocation)
        return sandbox
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

    func snapshots(_ volume: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws -> [[String: Any]] {
        try #require(
            try self.json(["snapshot", "list"] + (volume.map { [$0] } ?? []), sourceLocation: sourceLocation)
                as? [[String: Any]],
            "snapshot list --json is not an array of objects", sourceLocation: sourceLocation)
    }

    /// Everything a refused command must leave as it was: the volume and snapshot listings and
    /// the committed generation (a refused command commits nothing).
    func state(sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let volumes = try self.ok(["volume", "list", "--json"], sourceLocation: sourceLocation)
        let snapshots = try self.ok(["snapshot", "list", "--json"], sourceLocation: sourceLocation)
        let generation = uint(try self.poolStatus(sourceLocation: sourceLocation)["generation"]) ?? 0
        return "volumes=\(volumes)\nsnapshots=\(snapshots)\ngeneration=\(generation)"
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
    #expect(missing.isEmpty, "\(what) lacks keys \(missing); has \(object.keys.sorted())", sourceLocation: sourceLocation)
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
    #expect(exported.count == size, "\(what): export is \(exported.count) bytes, expected \(size)", sourceLocation: sourceLocation)
    let prefix = min(expected.count, exported.count)
    if let first = (0..<prefix).first(where: { exported[$0] != expected[$0] }) {
        Issue.record("\(what): first differing byte at offset \(first)", sourceLocation: sourceLocation)
    }
    if exported.count > expected.count,
        let nonZero = (expected.count..<exported.count).first(where: { exported[$0] != 0 })
    {
        Issue.record("\(what): byte at offset \(nonZero), past the data, is not zero", sourceLocation: sourceLocation)
    }
}
