// swift-tools-version: 6.1
// Strata: a user-space block-storage target. See README.md and docs/.
import Foundation
import PackageDescription

// Every target turns on `ExistentialAny` so an existential is always spelled `any P`.
// SE-0335: https://github.com/swiftlang/swift-evolution/blob/main/proposals/0335-existential-any.md
let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny")
]

let package = Package(
    name: "Strata",
    platforms: [.macOS(.v15)],
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
    ],
    targets: [
        // crc32c with SSE4.2 where the CPU has it, and fallocate(2): Swift cannot reach either.
        .target(name: "CStrata"),
        .target(
            name: "StrataCore",
            dependencies: ["CStrata"],
            swiftSettings: strictSettings
        ),
        .target(
            name: "StrataTesting",
            dependencies: ["StrataCore"],
            swiftSettings: strictSettings
        ),
        // What the front ends share: the registry of open connections and the listener.
        .target(
            name: "StrataFrontEnd",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        // NBD front end: Wire/ is the pure codec and connection state; Server/ the NIO glue.
        .target(
            name: "StrataNBD",
            dependencies: [
                "StrataCore", "StrataFrontEnd",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // iSCSI front end: Wire/ is the PDU codec, Login/ the login and text negotiation (with
        // CHAP), SCSI/ the block command set over the engine, Server/ the NIO glue and sessions.
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
        // The daemon: exports, the control socket, and the service shared with the local CLI.
        .target(
            name: "StrataServer",
            dependencies: [
                "StrataCore", "StrataFrontEnd", "StrataNBD", "StrataISCSI",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "strata",
            dependencies: [
                "StrataCore",
                "StrataServer",
                "StrataISCSI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "StrataCoreTests",
            dependencies: ["StrataCore", "StrataTesting"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "StrataNBDTests",
            dependencies: [
                "StrataNBD", "StrataCore", "StrataTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
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
                "StrataServer", "StrataCore", "StrataFrontEnd", "StrataReplication",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "CLITests",
            dependencies: ["StrataCore"],
            swiftSettings: strictSettings
        ),
    ],
    // Swift 6 language mode: complete data-race checking in every target.
    // SE-0337/SE-0414: https://github.com/swiftlang/swift-evolution/blob/main/proposals/0414-region-based-isolation.md
    swiftLanguageModes: [.v6]
)

// The engine benchmark (bench/run-engine.sh builds it in release mode). STRATA_NO_BENCH=1
// leaves it out of a build that only needs the tests.
if ProcessInfo.processInfo.environment["STRATA_NO_BENCH"] == nil {
    package.targets.append(
        .executableTarget(
            name: "StrataBench",
            dependencies: ["StrataCore"],
            path: "bench/StrataBench",
            swiftSettings: strictSettings
        ))
}

// Send/receive streams and replication (issue 5, docs/STREAM.md): zlib for `send --compress`
// (Debian: zlib1g-dev), the StrataReplication module and its tests, and the daemon's and the
// CLI's dependency on it. Kept in one block so the module's wiring lives in one place.
package.targets.append(contentsOf: [
    .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
    .target(
        name: "StrataReplication",
        dependencies: [
            "StrataCore", "CZlib", .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
        ],
        swiftSettings: strictSettings
    ),
    .testTarget(
        name: "StrataReplicationTests",
        dependencies: [
            "StrataReplication", "StrataCore", "StrataTesting", .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
        ],
        swiftSettings: strictSettings
    ),
])
for target in package.targets where target.name == "StrataServer" || target.name == "strata" {
    target.dependencies.append("StrataReplication")
}

// Layered images (issue 10): read-only decoders of external base images (raw, qcow2 with
// backing chains) behind StrataCore's `BaseImage` seam, and their tests.
package.targets.append(contentsOf: [
    .target(
        name: "StrataImage",
        dependencies: ["StrataCore", "CStrata", "CZlib"],
        swiftSettings: strictSettings
    ),
    .testTarget(
        name: "StrataImageTests",
        dependencies: ["StrataImage", "StrataCore"],
        swiftSettings: strictSettings
    ),
])
for target in package.targets where target.name == "StrataServer" || target.name == "strata" {
    target.dependencies.append("StrataImage")
}
