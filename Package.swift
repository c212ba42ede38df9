// swift-tools-version: 6.1
// Strata: a user-space block-storage target. See README.md, HACKING.md (the module map) and docs/.
//
// One declaration, read top to bottom: the packages Strata depends on, then its targets from
// the bottom of the layering up (C shims, the engine, image decoders and streams, the front
// ends, the daemon, the CLI, the benchmark), then the test targets. Nothing here depends on the
// environment: every build sees the same targets.
import PackageDescription

let strictSettings: [SwiftSetting] = [
    // Every existential is spelled `any P`, so the cost of a dynamic type is visible where it is paid.
    // SE-0335: https://github.com/swiftlang/swift-evolution/blob/main/proposals/0335-existential-any.md
    .enableUpcomingFeature("ExistentialAny")
]

let package = Package(
    name: "Strata",
    // No `platforms`: Strata runs on Linux only (it calls Glibc directly: SCM_RIGHTS, fallocate,
    // rlimits, sockaddr_un), and SwiftPM declares minimum versions for Apple platforms only. The
    // macOS 15 line this replaces claimed a platform the code never built on.
    products: [
        .executable(name: "strata", targets: ["strata"]),
        .library(name: "StrataCore", targets: ["StrataCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // MD5 for iSCSI CHAP, SHA-256 and HMAC-SHA-256 for streams and replication, with
        // constant-time comparison; BoringSSL on Linux.
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        // The daemon is one ServiceGroup: services start together and stop in reverse order on
        // SIGINT/SIGTERM (graceful shutdown).
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // HTTP for the object-store tier (Swift and S3 APIs): connection reuse, timeouts.
        .package(url: "https://github.com/swift-server/async-http-client", exact: "1.37.0"),
        // The HTTP service's /metrics: the swift-metrics API over a Prometheus registry.
        .package(url: "https://github.com/apple/swift-metrics", exact: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
        // TLS for NBD (STARTTLS) and HTTPS for the HTTP service; the version async-http-client
        // resolves to.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    ],
    targets: [
        // MARK: C shims

        // crc32c with SSE4.2 where the CPU has it, fallocate(2), and descriptor passing
        // (SCM_RIGHTS): Swift cannot reach them.
        .target(name: "CStrata"),
        // zlib for `send --compress` and compressed qcow2 clusters (Debian: zlib1g-dev).
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),

        // MARK: Engine, images, streams

        .target(
            name: "StrataCore",
            dependencies: ["CStrata"],
            swiftSettings: strictSettings
        ),
        // Read-only decoders of external base images (raw, qcow2 with backing chains) behind
        // StrataCore's `BaseImage` seam.
        .target(
            name: "StrataImage",
            dependencies: ["StrataCore", "CStrata", "CZlib"],
            swiftSettings: strictSettings
        ),
        // x509 credentials in qemu's layout, read once for every TLS service of the daemon (NBD,
        // HTTPS, replication and mirror traffic), through swift-nio-ssl.
        .target(
            name: "StrataTLS",
            dependencies: [
                "StrataCore",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strictSettings
        ),
        // Send/receive streams and daemon-to-daemon replication (docs/STREAM.md), over the
        // `Transport` protocol: TCP on SwiftNIO (with mutual TLS when the daemon has certificates),
        // or StrataTesting's simulated network.
        .target(
            name: "StrataReplication",
            dependencies: [
                "StrataCore", "StrataFrontEnd", "CZlib", "StrataTLS",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),

        // The object-store tier (docs/OBJECTSTORE.md): `ObjectStore` with an OpenStack Swift client
        // (TempAuth v1.0) and an S3 client (SigV4 with swift-crypto), both on async-http-client;
        // remotes, manifests, push, ls, delete and gc. StrataCore never imports it.
        .target(
            name: "StrataObjectStore",
            dependencies: [
                "StrataCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),

        // Mirrors that split and re-join (docs/MIRROR.md): the `VolumeTap` that puts every write on
        // the legs, the `MirrorLeg` protocol and its local-pool leg, split points and resync.
        .target(
            name: "StrataMirror",
            dependencies: ["StrataCore", "StrataReplication"],
            swiftSettings: strictSettings
        ),

        // MARK: Front ends

        // What the front ends share: the registry of open connections and the listener.
        .target(
            name: "StrataFrontEnd",
            dependencies: [
                "StrataCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        // NBD front end: Wire/ is the pure codec and connection state; Server/ the NIO glue, with
        // TLS (STARTTLS) through swift-nio-ssl, which async-http-client already brings in.
        .target(
            name: "StrataNBD",
            dependencies: [
                "StrataCore", "StrataFrontEnd", "StrataTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // iSCSI front end: Wire/ is the PDU codec, Login/ the login and text negotiation (with
        // CHAP), Session/ the full feature phase, SCSI/ the command set, Server/ the NIO glue.
        .target(
            name: "StrataISCSI",
            dependencies: [
                "StrataCore", "StrataFrontEnd",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strictSettings
        ),

        // MARK: Daemon and CLI

        // The daemon's HTTP service (docs/OPERATIONS.md): a read-only NIOHTTP1 server for
        // Prometheus /metrics, the /api/v1 JSON (docs/openapi.yaml) and the dashboard, whose files
        // are compiled in. It knows HTTP, not the control plane: StrataServer gives it the JSON.
        .target(
            name: "StrataHTTP",
            dependencies: [
                "StrataCore", "StrataFrontEnd", "StrataReplication", "StrataTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),

        // The daemon: its services, the control protocol and sockets, and `PoolService`, which
        // the local CLI shares.
        .target(
            name: "StrataServer",
            dependencies: [
                "CStrata", "StrataCore", "StrataFrontEnd", "StrataNBD", "StrataISCSI", "StrataReplication", "StrataImage",
                "StrataObjectStore", "StrataMirror", "StrataHTTP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "strata",
            dependencies: [
                "StrataCore", "StrataServer", "StrataNBD", "StrataISCSI", "StrataReplication", "StrataImage",
                "StrataObjectStore", "StrataMirror", "StrataHTTP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // The engine benchmark; bench/run-engine.sh builds it in release mode with
        // `--product StrataBench`. An ordinary target: a debug test build compiles it too, which
        // costs seconds (HACKING.md has the measurement).
        .executableTarget(
            name: "StrataBench",
            dependencies: ["StrataCore"],
            path: "bench/StrataBench",
            swiftSettings: strictSettings
        ),

        // MARK: Fuzzing

        // The fuzz targets, one per decoder of outside bytes (docs/TESTING.md, "Fuzzing"). An
        // ordinary library, so every build type-checks it and StrataFuzzTests replays the corpus.
        .target(
            name: "StrataFuzz",
            dependencies: [
                "StrataCore", "StrataNBD", "StrataISCSI", "StrataReplication", "StrataImage", "StrataObjectStore",
                "StrataServer", "StrataTesting",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // One executable for every target. scripts/fuzz.sh builds it into .build-fuzz with
        // `-sanitize=fuzzer,address -D STRATA_LIBFUZZER`, which makes it a libFuzzer binary;
        // in the ordinary build it replays inputs without the sanitizer.
        // libFuzzer's driver declared for Swift (the function is libFuzzer's, in the fuzz build).
        .target(name: "CStrataFuzz"),
        .executableTarget(
            name: "strata-fuzz",
            dependencies: ["StrataFuzz", "CStrataFuzz"],
            path: "Sources/strata-fuzz",
            swiftSettings: strictSettings
        ),

        // MARK: Tests

        // Simulations for tests: SimDevice (the pool's disk) and SimNetwork (replication's transport).
        .target(
            name: "StrataTesting",
            dependencies: [
                "StrataCore", "StrataFrontEnd", "StrataReplication", .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "StrataCoreTests",
            dependencies: ["StrataCore", "StrataTesting"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "StrataMirrorTests",
            dependencies: [
                "StrataMirror", "StrataCore", "StrataTesting", "StrataReplication",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "StrataImageTests",
            dependencies: ["StrataImage", "StrataCore", "StrataTesting"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "StrataReplicationTests",
            dependencies: [
                "StrataReplication", "StrataCore", "StrataTesting",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "StrataNBDTests",
            dependencies: [
                "StrataNBD", "StrataCore", "StrataTesting", "StrataFrontEnd",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "StrataISCSITests",
            dependencies: [
                "StrataISCSI", "StrataCore", "StrataTesting", "StrataFrontEnd",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "StrataServerTests",
            dependencies: [
                "StrataServer", "StrataCore", "StrataFrontEnd", "StrataReplication", "StrataTesting",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "StrataObjectStoreTests",
            dependencies: [
                "StrataObjectStore", "StrataCore", "StrataTesting", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "StrataHTTPTests",
            dependencies: [
                "StrataHTTP", "StrataCore", "StrataTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "StrataFuzzTests",
            dependencies: ["StrataFuzz"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "CLITests",
            dependencies: ["StrataCore"],
            swiftSettings: strictSettings
        ),
    ],
    // Swift 6 language mode in every target: complete data-race checking.
    // SE-0337: https://github.com/swiftlang/swift-evolution/blob/main/proposals/0337-support-incremental-migration-to-concurrency-checking.md
    // SE-0414: https://github.com/swiftlang/swift-evolution/blob/main/proposals/0414-region-based-isolation.md
    swiftLanguageModes: [.v6]
)
