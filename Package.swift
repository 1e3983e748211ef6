// swift-tools-version:6.1
import PackageDescription

// No unsafeFlags anywhere: SwiftPM refuses a versioned dependency (`from: "0.1.0"`) whose
// targets carry any, even behind a package trait (tested with SwiftPM 6.3: README,
// "Depending on PocketDiffusion"). The C kernels (CKernels: block products, softmax,
// activations, norms) need no flag: each carries its `target` attribute and is chosen at
// run time (docs/KERNELS.md). The remaining Swift SIMD kernels (the portable twins, the
// Winograd transforms) are faster with FMA and F16C at compile time on x86_64; the
// project's scripts pass them on the command line (tools/swift-flags.sh: `-Xswiftc
// -target-cpu -Xswiftc haswell`), and a consumer may add the same two flags. Two more flags went for
// the same reason: `-O` for the numeric targets in debug builds (build in release: the
// scripts do, and tools/sanitize.sh optimises its debug builds with -Xswiftc -O) and
// `-O3` for CKernels (SwiftPM's release -O2 gives the same code: tools/check-kernel-asm.sh
// checks its FMAs and register tiles).
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
        // C kernels chosen at run time by what the CPU has: block products (f32, bf16), the
        // softmax, activations and norms (docs/KERNELS.md).
        .target(name: "CKernels"),
        .target(name: "SDKernels", dependencies: ["CKernels"]),
        .target(name: "SDFormat", dependencies: ["SDKernels"]),
        .target(name: "SDTokenizer"),
        .target(name: "SDSchedulers"),
        .target(name: "SDModels", dependencies: ["SDKernels", "SDFormat"]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .target(name: "SDConverter", dependencies: ["SDFormat", "SDModels", "SDTokenizer"]),
        .target(name: "SDPipeline",
                dependencies: ["SDKernels", "SDFormat", "SDModels", "SDSchedulers", "SDTokenizer", "CPNG"]),
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
        .testTarget(name: "SDKernelsTests", dependencies: ["SDKernels"]),
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
