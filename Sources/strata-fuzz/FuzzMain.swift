// strata-fuzz: the fuzz targets of Sources/StrataFuzz as one executable (docs/TESTING.md,
// "Fuzzing"). Built by scripts/fuzz.sh with `-sanitize=fuzzer,address -D STRATA_LIBFUZZER`,
// it is a libFuzzer binary: STRATA_FUZZ_TARGET names the target, and every libFuzzer flag
// applies (`-runs=`, `-max_total_time=`, corpus directories, a crash file to reproduce). In the
// ordinary build it replays inputs without the sanitizer: `strata-fuzz list`, and
// `strata-fuzz replay TARGET FILE|DIRECTORY...`.
//
// One executable for every target, not one per target: the sanitizer build compiles and links
// the package once (docs/TESTING.md has the measurement).

import CStrataFuzz
import Foundation
import StrataFuzz

#if STRATA_LIBFUZZER

/// The target STRATA_FUZZ_TARGET names; the run stops at once when it names none.
private let selected: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["STRATA_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTargets.named(name) else {
        let names = FuzzTargets.all.map(\.name).joined(separator: " ")
        FileHandle.standardError.write(Data("strata-fuzz: set STRATA_FUZZ_TARGET to one of: \(names)\n".utf8))
        exit(2)
    }
    return target
}()

/// Runs one input through the selected target.
private func runInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selected.run(size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

/// libFuzzer's entry point: one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    runInput(data, size)
}

/// The process's entry: SwiftPM defines `main` as this target's entry symbol, so libFuzzer's
/// own `main` is not linked; this runs libFuzzer's driver with the command line, as it would.
@_cdecl("strata_fuzz_main")
public func strataFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments) { data, size in runInput(data, size) }
}

#else

@main
struct FuzzReplay {
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        switch arguments.first {
        case "list":
            for target in FuzzTargets.all { print("\(target.name)\t\(target.summary)") }
        case "replay" where arguments.count >= 3:
            guard let target = FuzzTargets.named(arguments[1]) else { Self.fail("no fuzz target \(arguments[1]); see `strata-fuzz list`") }
            var count = 0
            for path in arguments.dropFirst(2) {
                for file in Self.files(path) {
                    guard let data = FileManager.default.contents(atPath: file) else { Self.fail("cannot read \(file)") }
                    target.run(Array(data))
                    count += 1
                }
            }
            print("strata-fuzz: \(target.name): replayed \(count) inputs")
        default:
            Self.fail("usage: strata-fuzz list | strata-fuzz replay TARGET FILE|DIRECTORY...")
        }
    }

    /// `path` itself, or the files in it when it is a directory, sorted.
    static func files(_ path: String) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { Self.fail("no such file \(path)") }
        guard isDirectory.boolValue else { return [path] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.sorted().map { path + "/" + $0 }
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("strata-fuzz: \(message)\n".utf8))
        exit(2)
    }
}

#endif
