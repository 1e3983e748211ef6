// swift-tools-version:6.1
import PackageDescription

// Kernels need FMA and F16C at compile time, or `addingProduct` and Float16
// conversions become per-lane library calls (fmaf, __extendhfsf2). Haswell is the
// oldest x86_64 with both; arm64 has them in the base ISA.
#if arch(x86_64)
let kernelFlags: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let kernelFlags: [SwiftSetting] = []
#endif
// The numeric targets are optimised in debug builds too (unoptimised SIMD code runs
// ~100× slower); tools/test.sh still tests in release, since generic kernels are only
// fully specialised with whole-module optimisation. Both builds keep Swift's checks
// (`-O`, not `-Ounchecked`): hot loops that must not pay for them use unsafe pointers
// and wrapping arithmetic explicitly, each place commented.
let optimized: [SwiftSetting] = kernelFlags + [
    .unsafeFlags(["-wmo"], .when(configuration: .release)),
    .unsafeFlags(["-O"], .when(configuration: .debug)),
]

let package = Package(
    name: "PocketDiffusion",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "pocketsd", targets: ["pocketsd"]),
        // Everything a program needs to run or build its own pipeline, in one import.
        .library(name: "PocketDiffusion", targets: ["PocketDiffusion"]),
        .library(name: "SDPipeline", targets: ["SDPipeline"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // `swift package generate-documentation` (the DocC catalog in Sources/PocketDiffusion).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
        // `pocketsd serve` only: the runtime modules never import it.
        // Without its default traits: the swift-configuration support is unused here, and with
        // it SwiftPM recompiled two Hummingbird modules on every build.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: ["FullFoundation"]),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // C intrinsics Swift cannot reach (bf16 dot products), chosen at run time.
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        .target(name: "SDKernels", dependencies: ["CKernels"], swiftSettings: optimized),
        .target(name: "SDFormat", dependencies: ["SDKernels"], swiftSettings: kernelFlags),
        .target(name: "SDTokenizer"),
        .target(name: "SDSchedulers"),
        .target(name: "SDModels", dependencies: ["SDKernels", "SDFormat"], swiftSettings: optimized),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .target(name: "SDConverter", dependencies: ["SDFormat", "SDModels", "SDTokenizer"], swiftSettings: kernelFlags),
        .target(name: "SDPipeline",
                dependencies: ["SDKernels", "SDFormat", "SDModels", "SDSchedulers", "SDTokenizer", "CPNG"],
                swiftSettings: kernelFlags),
        .target(name: "PocketDiffusion",
                dependencies: ["SDConverter", "SDFormat", "SDKernels", "SDModels", "SDPipeline", "SDSchedulers", "SDTokenizer"]),
        .executableTarget(name: "CustomPipeline", dependencies: ["PocketDiffusion"], path: "Examples/CustomPipeline"),
        .executableTarget(name: "ImageToImage", dependencies: ["PocketDiffusion"], path: "Examples/ImageToImage"),
        // The HTTP server of `pocketsd serve` (web page, AUTOMATIC1111 and OpenAI APIs).
        .target(name: "SDServer",
                dependencies: ["SDPipeline", "SDFormat", "SDSchedulers", .product(name: "Hummingbird", package: "hummingbird"),
                               .product(name: "NIOCore", package: "swift-nio"),
                               .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                               .product(name: "Logging", package: "swift-log")]),
        .executableTarget(name: "pocketsd",
                          dependencies: ["SDPipeline", "SDConverter", "SDServer",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .testTarget(name: "SDKernelsTests", dependencies: ["SDKernels"], swiftSettings: kernelFlags),
        .testTarget(name: "SDFormatTests", dependencies: ["SDFormat", "SDConverter"]),
        .testTarget(name: "SDTokenizerTests", dependencies: ["SDTokenizer"]),
        .testTarget(name: "SDSchedulersTests", dependencies: ["SDSchedulers"]),
        .testTarget(name: "SDModelsTests", dependencies: ["SDModels", "SDConverter"]),
        .testTarget(name: "SDPipelineTests", dependencies: ["SDPipeline", "SDConverter"]),
        .testTarget(name: "CLITests", dependencies: ["pocketsd", "CustomPipeline", "ImageToImage"]),
        .testTarget(name: "SDServerTests",
                    dependencies: ["SDServer", "SDConverter", .product(name: "Hummingbird", package: "hummingbird")]),
    ],
    swiftLanguageModes: [.v5]
)
