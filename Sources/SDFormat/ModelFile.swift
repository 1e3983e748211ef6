/// The PocketDiffusion model file (`.pdm`): one self-describing, little-endian,
/// memory-mappable file per model.
///
///     offset  bytes  field
///          0      8  magic "PDMODEL\0"
///          8      4  format version (1)
///         12      4  tensor alignment in bytes (power of two, >= 64)
///         16      8  metadata offset        24  8  metadata byte count
///         32      8  tensor table offset    40  8  tensor table byte count
///         48      8  tensor count
///         56      8  data offset (a multiple of `componentAlignment`)
///         64      8  file byte count (a shorter file is truncated)
///         72      8  checksum of bytes 0..<72, the metadata and the table
///         80     48  reserved, zero
///
/// Metadata: u32 entry count, then per entry: key (u16 length + UTF-8), u8 type, value:
/// 1 string (u32 length + UTF-8), 2 int (i64), 3 float (f64), 4 bool (u8),
/// 5 string array (u32 count, then strings as in 1). Component configs are JSON strings
/// (`unet.config`, `vae.config`, `text_encoder.config`, `scheduler.config`); the tokenizer
/// is `tokenizer.vocab` and `tokenizer.merges` (string arrays) and `tokenizer.*` ints.
///
/// Tensor table, per tensor: key (u16 length + UTF-8, the component name, a dot, then
/// diffusers' state-dict key), u8 dtype (`ModelFile.dtypeCodes`), u8 rank, rank × u64
/// dims, u64 data offset, u64 data byte count, u64 scales offset (q8: rows × f32 per-row
/// scales; 0 otherwise), u64 checksum (`Checksum` of the data bytes then the scale bytes).
///
/// Tensor data starts at aligned offsets; each component's tensors are contiguous, in
/// execution order, starting on a `componentAlignment` boundary (a page on every
/// common kernel), so a component can be prefetched or dropped on its own.
public enum ModelFile {
    /// The file's first 8 bytes: "PDMODEL\0".
    public static let magic: [UInt8] = Array("PDMODEL".utf8) + [0]
    /// The format version this code writes; the reader accepts only this one.
    public static let version: UInt32 = 1
    /// Size of the fixed header, bytes.
    public static let headerBytes = 128
    /// Alignment of each tensor's data, bytes.
    public static let tensorAlignment = 64
    /// Alignment of each component's first tensor (and of the data section), bytes.
    public static let componentAlignment = 65536

    /// Stable on-disk codes of the element types.
    public static let dtypeCodes: [(TensorDType, UInt8)] = [
        (.f32, 0), (.f16, 1), (.q8, 2), (.bf16, 3), (.f64, 4), (.i64, 5), (.i32, 6), (.i16, 7), (.i8, 8), (.u8, 9), (.bool, 10),
    ]
    static func code(of dtype: TensorDType) -> UInt8 { dtypeCodes.first { $0.0 == dtype }!.1 }
    static func dtype(code: UInt8) -> TensorDType? { dtypeCodes.first { $0.1 == code }?.0 }
}

/// A typed metadata value.
public enum MetadataValue: Equatable, Sendable {
    case string(String)
    case int(Int64)
    case float(Double)
    case bool(Bool)
    case strings([String])

    var typeCode: UInt8 {
        switch self {
        case .string: return 1
        case .int: return 2
        case .float: return 3
        case .bool: return 4
        case .strings: return 5
        }
    }
}

/// Little-endian byte serialisation for the header, metadata and table.
struct ByteWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func string(_ s: String) { u32(UInt32(s.utf8.count)); bytes.append(contentsOf: s.utf8) }
    mutating func key(_ s: String) { u16(UInt16(s.utf8.count)); bytes.append(contentsOf: s.utf8) }
}

/// Bounds-checked little-endian reads; every failure is a `FormatError`.
struct ByteReader {
    let base: UnsafeRawPointer
    var offset: Int
    let end: Int
    let path: String
    let what: String

    mutating func take(_ n: Int) throws -> Int {
        guard n >= 0, n <= end - offset else { throw FormatError(path, "\(what) is truncated or corrupted") }
        defer { offset += n }
        return offset
    }
    mutating func u8() throws -> UInt8 { base.load(fromByteOffset: try take(1), as: UInt8.self) }
    mutating func u16() throws -> UInt16 { UInt16(littleEndian: base.loadUnaligned(fromByteOffset: try take(2), as: UInt16.self)) }
    mutating func u32() throws -> UInt32 { UInt32(littleEndian: base.loadUnaligned(fromByteOffset: try take(4), as: UInt32.self)) }
    mutating func u64() throws -> UInt64 { UInt64(littleEndian: base.loadUnaligned(fromByteOffset: try take(8), as: UInt64.self)) }
    mutating func int() throws -> Int {
        let v = try u64()
        guard v < UInt64(Int.max / 2) else { throw FormatError(path, "\(what) holds an impossible size") }
        return Int(v)
    }
    mutating func utf8(_ n: Int) throws -> String {
        let start = try take(n)
        let bytes = UnsafeRawBufferPointer(start: base + start, count: n)
        guard let s = String(validating: bytes, as: UTF8.self) else { throw FormatError(path, "\(what) holds invalid UTF-8") }
        return s
    }
    mutating func string() throws -> String { try utf8(Int(try u32())) }
    mutating func key() throws -> String { try utf8(Int(try u16())) }
}
