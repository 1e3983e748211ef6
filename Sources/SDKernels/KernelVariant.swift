import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// Which instruction set the block products run on, chosen at run time from what the CPU
/// reports (cpuid/xgetbv via `pd_cpu_features`), so one binary uses the widest FMA unit of
/// whatever x86_64 it lands on. `portable` is the Swift SIMD twin every other variant is
/// tested against; it is also what arm64 runs (NEON through Swift's SIMD8).
///
/// A variant decides two things: the f32 block product under `linear`, implicit-GEMM
/// `conv2d`, the Winograd products and attention (`Gemm.block`), and which kernel runs the
/// bf16 products (`BF16Gemm.block`: the Swift twin, vdpbf16ps, or AMX tiles).
public enum KernelVariant: String, CaseIterable, Sendable {
    /// Swift SIMD micro-kernels (x86_64 builds target Haswell: AVX2 ymm, 6 × 16 tile);
    /// bf16 products on the Swift twin.
    case portable
    /// C AVX2 + FMA block product (6 × 16 ymm tile); bf16 on the Swift twin.
    case avx2
    /// C AVX-512 block product (14 × 32 zmm tile); bf16 on the Swift twin.
    case avx512
    /// AVX-512 f32 block product and native AVX-512 BF16 dot products for bf16.
    case avx512BF16 = "avx512-bf16"
    /// `avx512-bf16` with the bf16 block products on AMX tiles (TDPBF16PS, 16 × 16 × 32 per
    /// instruction; Intel Sapphire Rapids and later), where Linux grants the tile state.
    case amx

    /// Whether this CPU and OS can run the variant.
    public var isSupported: Bool {
        let f = Self.cpuFeatures
        switch self {
        case .portable: return true
        case .avx2: return f & UInt32(PD_CPU_AVX2_FMA) != 0
        case .avx512: return f & UInt32(PD_CPU_AVX512) != 0
        case .avx512BF16: return f & UInt32(PD_CPU_AVX512_BF16) != 0
        case .amx: return Self.amxGranted
        }
    }

    /// Whether bf16 products run natively (else on the slower portable twin).
    public var hasNativeBF16: Bool { bf16Implementation != .portable }

    /// Whether int8 products run on int8 dot products (else on the slow portable C kernel).
    public var hasNativeInt8: Bool { i8Implementation != .portable }

    /// The kernel behind `BF16Gemm.block` under this variant.
    var bf16Implementation: BF16Gemm.Implementation {
        switch self {
        case .portable, .avx2, .avx512: return .portable
        case .avx512BF16: return .native
        case .amx: return .amx
        }
    }

    /// The kernel behind `I8Gemm.block` (`--precision int8`) under this variant: `vpdpbusd`
    /// 16 wide where the variant runs AVX-512 and the CPU has AVX512-VNNI, 8 wide where it has
    /// AVX-VNNI, on arm64 `sdot` where the CPU has the dot-product extension (any variant:
    /// arm64 has only `portable`), else the portable C reference. (AMX-INT8 is not used: with
    /// an activation scale per 32 k, each tile product would be followed by a store and a
    /// vector pass over its 16 × 16 sums, which the zmm kernel does in registers.)
    var i8Implementation: I8Gemm.Implementation {
        #if arch(arm64)
        return pd_i8_sdot_available() != 0 ? .sdot : .portable
        #else
        return i8Implementation(features: Self.cpuFeatures)
        #endif
    }

    /// The x86 choice for a set of `pd_cpu_features()` bits (a function of them, for the tests).
    func i8Implementation(features f: UInt32) -> I8Gemm.Implementation {
        let zmm = f & UInt32(PD_CPU_AVX512_VNNI) != 0, ymm = f & UInt32(PD_CPU_AVX_VNNI) != 0
        switch self {
        case .portable: return .portable
        case .avx2: return ymm ? .avxVNNI : .portable
        case .avx512, .avx512BF16, .amx: return zmm ? .avx512VNNI : ymm ? .avxVNNI : .portable
        }
    }

    /// The name of the kernel that runs int8 products under this variant: "avx512-vnni",
    /// "avx-vnni", "sdot" or "portable".
    public var int8KernelName: String { i8Implementation.name }

    /// AMX-BF16 present and the tile state granted by the OS (asked for once, at the first
    /// use: the request is process-wide).
    private static let amxGranted = pd_amx_bf16_available() != 0

    /// Whether the activations, the norms, the attention's softmax and Float16 → Float
    /// weight conversion run C builds (CKernels/f32_vector_math.c for AVX2 + FMA + F16C,
    /// f32_vector_math_avx512.c 16 wide, both bitwise equal to the Swift twins) rather than
    /// the Swift twins, whose speed depends on the flags Swift was built with (without F16C
    /// and FMA, per-lane library calls): every variant but `portable` (all of them need
    /// AVX2 + FMA). Which width runs is `vectorMath`: the 16-wide builds where
    /// `usesAVX512VectorMath`, else the 8-wide ones. Not in builds whose Swift vectors are 16
    /// wide (`SDKERNELS_AVX512`): there the twins sum in another order, and they are compiled
    /// for AVX-512 anyway.
    var usesCVectorMath: Bool { self != .portable && NativeF32.scalarCount == 8 }

    /// Whether those C builds run 16 wide (f32_vector_math_avx512.c; also the bf16
    /// attention's softmax, `pd_softmax_pack_bf16_avx512`): every variant that runs AVX-512
    /// F/BW/VL.
    var usesAVX512VectorMath: Bool {
        switch self {
        case .avx512, .avx512BF16, .amx: return usesCVectorMath
        case .portable, .avx2: return false
        }
    }

    /// Which build of the non-product f32 kernels runs: the Swift twins, or C 8 or 16 wide.
    enum VectorMathBuild { case swift, avx2, avx512 }

    var vectorMath: VectorMathBuild {
        usesAVX512VectorMath ? .avx512 : usesCVectorMath ? .avx2 : .swift
    }

    /// Whether Winograd F(2, 3)'s input and output transforms run their 16-wide C builds
    /// (CKernels/winograd_transforms.c, bitwise equal to the Swift twins at any width).
    var usesAVX512Transforms: Bool { self == .avx512 || self == .avx512BF16 || self == .amx }

    /// The widest supported variant: what `auto` means.
    public static var best: KernelVariant {
        [.amx, .avx512BF16, .avx512, .avx2].first(where: \.isSupported) ?? .portable
    }

    /// Supported variants, narrowest first.
    public static var supported: [KernelVariant] { allCases.filter(\.isSupported) }

    /// This CPU's feature bits, as `pd_cpu_features()` reports them (read once).
    public static let cpuFeatures: UInt32 = pd_cpu_features()

    /// CPU features as words, for reports ("avx2+fma avx512 amx-bf16", or "none").
    public static var featureNames: String {
        let f = cpuFeatures
        let names = [(PD_CPU_AVX2_FMA, "avx2+fma+f16c"), (PD_CPU_AVX512, "avx512f/bw/vl"),
                     (PD_CPU_AVX512_BF16, "avx512-bf16"), (PD_CPU_AVX512_VNNI, "avx512-vnni"),
                     (PD_CPU_AVX_VNNI, "avx-vnni"), (PD_CPU_AMX_BF16, "amx-bf16")]
            .filter { f & UInt32($0.0) != 0 }.map(\.1)
        #if arch(arm64)
        return names.isEmpty ? "neon" : names.joined(separator: " ")
        #else
        return names.isEmpty ? "none" : names.joined(separator: " ")
        #endif
    }

    /// `--kernels` values: "auto" or a variant's name.
    public static let choices = ["auto"] + allCases.map(\.rawValue)

    /// Why a `--kernels` value was refused: an unknown name, or a variant this CPU lacks.
    public enum ParseError: Error, CustomStringConvertible {
        case unknown(String)
        case unsupported(KernelVariant)
        /// A message naming the value and the accepted choices.
        public var description: String {
            switch self {
            case .unknown(let name):
                return "unknown kernel variant '\(name)' (expected one of: \(KernelVariant.choices.joined(separator: ", ")))"
            case .unsupported(.amx) where KernelVariant.cpuFeatures & UInt32(PD_CPU_AMX_BF16) != 0:
                return "kernel variant 'amx': this CPU lists AMX-BF16 but the tiles could not be used (Linux did "
                    + "not grant the tile state, or the start-up check of the AMX kernel failed); supported: auto, "
                    + "\(KernelVariant.supported.map(\.rawValue).joined(separator: ", "))"
            case .unsupported(let v):
                return "kernel variant '\(v.rawValue)' needs CPU features this machine lacks (it has: "
                    + "\(KernelVariant.featureNames); supported: auto, "
                    + "\(KernelVariant.supported.map(\.rawValue).joined(separator: ", ")))"
            }
        }
    }

    /// "auto" → `best`; a variant's name → that variant if the CPU runs it; else an error.
    public static func parse(_ name: String) throws -> KernelVariant {
        if name == "auto" { return best }
        guard let v = KernelVariant(rawValue: name) else { throw ParseError.unknown(name) }
        guard v.isSupported else { throw ParseError.unsupported(v) }
        return v
    }

    /// The environment variable that forces a variant for a whole process (tests, CI:
    /// `POCKETSD_KERNELS=portable swift test …`); `--kernels` overrides it.
    public static let environmentVariable = "POCKETSD_KERNELS"

    /// The start-up variant: `POCKETSD_KERNELS` when set and valid, else `best`. An invalid
    /// value is reported on stderr once and ignored; `environmentError` keeps it so the
    /// tests that rely on the variable can fail on it.
    static func initial() -> (KernelVariant, String?) {
        guard let raw = getenv(environmentVariable) else { return (best, nil) }
        let name = String(cString: raw)
        if name.isEmpty { return (best, nil) }
        do {
            return (try parse(name), nil)
        } catch {
            let message = "\(environmentVariable): \(error)"
            fputs("pocketsd: warning: \(message); using \(best.rawValue)\n", stderr)
            return (best, message)
        }
    }
}

extension Kernels {
    private static let initialVariant = KernelVariant.initial()

    /// The variant every block product runs (process-wide, like `precision`); set it before
    /// a run, not during one. Starts as `POCKETSD_KERNELS` or the best the CPU supports.
    nonisolated(unsafe) public static var variant: KernelVariant = initialVariant.0 {
        didSet {
            BF16Gemm.implementation = variant.bf16Implementation
            I8Gemm.implementation = variant.i8Implementation
        }
    }

    /// Why `POCKETSD_KERNELS` was ignored, if it was.
    public static var variantEnvironmentError: String? { initialVariant.1 }
}
