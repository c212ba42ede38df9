// StrataBench: engine benchmarks for the goals in bench/README.md. Release builds only
// (`bench/run-engine.sh` builds and runs it). Prints markdown tables on stdout, progress on
// stderr; reports medians and ratios and never fails on a timing.
//
// Usage: StrataBench [snapshot-io] [snapshot-create] [diff] [rawfile] [options]
//        StrataBench rawfile-step random|sequential --side engine|pwrite --rep N --fio DIR [options]
//   (no benchmark names = snapshot-io, snapshot-create, diff; plus rawfile with --fio)
//   --seconds N       seconds per timed IOPS measurement (default 5)
//   --fio DIR         directory of fio JSON reports and recorded steps (rawfile, rawfile-step)
//   --side S          which side a rawfile-step runs: engine or pwrite (the pwrite loop)
//   --rep N           repetition number a rawfile-step records
//   --rand-mib N      bytes of the 4 KiB random-write comparison, in MiB (default 1024)
//   --seq-mib N       bytes of the 1 MiB sequential-write comparison, in MiB (default 2048)
//   --quick           small sizes, for checking the harness (numbers not comparable)
// `rawfile-step` runs one repetition of one side of goal 4 (run-engine.sh interleaves it with
// the fio runs); `rawfile` reports all repetitions.
// Pools go under $BENCH_DIR (default /work/bench-tmp) and are deleted afterwards.

import Foundation
import StrataCore

struct Options {
    var benchmarks: [String] = []
    var seconds = 5
    var fioDirectory: String?
    var randomMiB: UInt64 = 1024
    var sequentialMiB: UInt64 = 2048
    var repetition: Int?
    var stepPattern: RawFileBench.Pattern?
    var side: RawFileBench.Side?
    var quick = false

    static let known = ["snapshot-io", "snapshot-create", "diff", "rawfile", "rawfile-step"]

    static func parse(_ arguments: [String]) throws -> Options {
        var options = Options()
        var iterator = arguments.makeIterator()
        func value(_ flag: String) throws -> String {
            guard let next = iterator.next() else { throw BenchError("\(flag) needs a value") }
            return next
        }
        func number(_ flag: String) throws -> Int {
            let text = try value(flag)
            guard let number = Int(text), number > 0 else {
                throw BenchError("\(flag): not a positive number: \(text)")
            }
            return number
        }
        while let argument = iterator.next() {
            switch argument {
            case "--seconds": options.seconds = try number(argument)
            case "--fio": options.fioDirectory = try value(argument)
            case "--rep": options.repetition = try number(argument)
            case "--side":
                let text = try value(argument)
                guard let side = RawFileBench.Side(rawValue: text) else {
                    throw BenchError("--side: engine or pwrite, not \(text)")
                }
                options.side = side
            case "--rand-mib": options.randomMiB = UInt64(try number(argument))
            case "--seq-mib": options.sequentialMiB = UInt64(try number(argument))
            case "--quick": options.quick = true
            case _ where Self.known.contains(argument): options.benchmarks.append(argument)
            case _ where RawFileBench.Pattern(rawValue: argument) != nil:
                options.stepPattern = RawFileBench.Pattern(rawValue: argument)
            default:
                throw BenchError("unknown argument \(argument); benchmarks: \(Self.known.joined(separator: ", "))")
            }
        }
        if options.benchmarks.isEmpty {
            options.benchmarks =
                ["snapshot-io", "snapshot-create", "diff"] + (options.fioDirectory != nil ? ["rawfile"] : [])
        }
        return options
    }
}

let gib: UInt64 = 1 << 30
let mib: UInt64 = 1 << 20

func runBenchmark(_ name: String, _ options: Options) throws {
    let quick = options.quick
    switch name {
    case "snapshot-io":
        try SnapshotIOBench(
            volumeSize: quick ? 256 * mib : 4 * gib, snapshotCounts: [0, 1, 10, 100, 1000], threadCounts: [1, 4],
            seconds: quick ? 1 : options.seconds
        ).run()
    case "snapshot-create":
        try SnapshotCreateBench(
            volumeSize: quick ? 1 * gib : 16 * gib, poolSize: quick ? 8 * gib : 20 * gib, count: 1000,
            writesBetween: 4, buckets: [0..<100, 100..<500, 500..<1000]
        ).run()
    case "diff":
        // Both pools 16 GiB: a 4 GiB pool's metadata region cannot map 1 GiB spread over 64 GiB.
        try DiffBench(
            cases: [
                .init(label: "1 GiB", volumeSize: 1 * gib, poolSize: 16 * gib),
                .init(label: "64 GiB", volumeSize: 64 * gib, poolSize: 16 * gib),
            ],
            baseBytes: 1 * gib, changedChunks: 1600, warmRuns: quick ? 3 : 11, reopenRuns: 3
        ).run()
    case "rawfile", "rawfile-step":
        guard let directory = options.fioDirectory else { throw BenchError("\(name) needs --fio DIR") }
        let bench = RawFileBench(
            fioDirectory: directory, randomBytes: options.randomMiB * mib, sequentialBytes: options.sequentialMiB * mib)
        if name == "rawfile" {
            try bench.report()
        } else {
            guard let pattern = options.stepPattern, let side = options.side, let repetition = options.repetition else {
                throw BenchError("rawfile-step needs random or sequential, --side engine|pwrite and --rep N")
            }
            try bench.step(pattern, side, repetition: repetition)
        }
    default:
        preconditionFailure("unknown benchmark \(name)")
    }
}

do {
    let options = try Options.parse(Array(CommandLine.arguments.dropFirst()))
    for name in options.benchmarks {
        let start = nowNanos()
        try runBenchmark(name, options)
        log("\(name): done in \(Format.seconds(secondsSince(start))) s")
    }
} catch {
    log("error: \(error)")
    exit(1)
}
