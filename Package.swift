// swift-tools-version: 6.1
import PackageDescription

/// Settings shared by every Swift target.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .unsafeFlags(["-Ounchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "Tessera",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "tessera", targets: ["tessera"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        // ── C libraries: system-library targets, imported only by the thin wrappers ──
        .systemLibrary(name: "CVips", path: "Sources/CVips", pkgConfig: "vips",
                       providers: [.apt(["libvips-dev"])]),
        .systemLibrary(name: "CJPEG", path: "Sources/CJPEG", pkgConfig: "libjpeg",
                       providers: [.apt(["libjpeg-dev"])]),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", pkgConfig: "sqlite3",
                       providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CLibPQ", path: "Sources/CLibPQ", pkgConfig: "libpq",
                       providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CMicroHTTPD", path: "Sources/CMicroHTTPD", pkgConfig: "libmicrohttpd",
                       providers: [.apt(["libmicrohttpd-dev"])]),
        // Non-variadic wrappers for the variadic / macro C APIs, each beside its library.
        .target(name: "CVipsShims", dependencies: ["CVips"], cSettings: [.unsafeFlags(["-O3"])]),
        .target(name: "CMicroHTTPDShims", dependencies: ["CMicroHTTPD"]),
        .target(name: "CJPEGShims", dependencies: ["CJPEG"], cSettings: [.unsafeFlags(["-O3"])]),
        // The inference engine's SIMD kernels and CPU-feature probe: no system-library dependencies.
        .target(name: "CEngineKernels", cSettings: [.unsafeFlags(["-O3"])]),

        // ── thin Swift wrappers: own every pointer, expose Swift types ──
        .target(name: "SlideIO", dependencies: ["CVips", "CVipsShims", "CJPEGShims"], swiftSettings: swiftSettings),
        .target(name: "LinearAlgebra", dependencies: ["COpenBLAS"], swiftSettings: swiftSettings),
        .target(name: "JobStore", dependencies: ["CSQLite", "CLibPQ"], swiftSettings: swiftSettings),
        .target(name: "HTTPServer", dependencies: ["CMicroHTTPD", "CMicroHTTPDShims"], swiftSettings: swiftSettings),

        // ── pure Swift ──
        .target(name: "Engine", dependencies: [
            "LinearAlgebra", "CEngineKernels",
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ], swiftSettings: swiftSettings),
        .target(name: "TesseraCore", dependencies: [
            "SlideIO", "Engine", "JobStore", "HTTPServer",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        .executableTarget(name: "tessera", dependencies: [
            "TesseraCore",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: swiftSettings),

        // ── tests ──
        .testTarget(name: "SlideIOTests", dependencies: ["SlideIO"], swiftSettings: swiftSettings),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "LinearAlgebra"],
                    resources: [.copy("Fixtures")], swiftSettings: swiftSettings),
        .target(name: "PostgresTestSupport", path: "Tests/PostgresTestSupport", swiftSettings: swiftSettings),
        .testTarget(name: "JobStoreTests", dependencies: ["JobStore", "PostgresTestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "HTTPServerTests", dependencies: ["HTTPServer"], swiftSettings: swiftSettings),
        .testTarget(name: "TesseraCoreTests", dependencies: ["TesseraCore", "JobStore", "PostgresTestSupport"], swiftSettings: swiftSettings),
    ]
)
