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
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0")
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
        .executableTarget(
            name: "strata",
            dependencies: [
                "StrataCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "StrataCoreTests",
            dependencies: ["StrataCore", "StrataTesting"],
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
