import Foundation
@testable import SDSchedulers

// Readers for Tests/Fixtures/schedulers/*.json, written by tools/make_scheduler_goldens.py.

enum Fixtures {
    static let directory = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent("schedulers")

    static func load<T: Decodable>(_ name: String, as type: T.Type) throws -> T {
        let data = try Data(contentsOf: directory.appendingPathComponent(name))
        return try JSONDecoder().decode(T.self, from: data)
    }

    /// Concatenated 8-digit hex float32 bit patterns -> floats.
    static func floats(hex: String) -> [Float] {
        let bytes = Array(hex.utf8)
        precondition(bytes.count % 8 == 0, "hex float string length \(bytes.count)")
        return stride(from: 0, to: bytes.count, by: 8).map { start in
            Float(bitPattern: UInt32(String(decoding: bytes[start..<start + 8], as: UTF8.self), radix: 16)!)
        }
    }

    /// FNV-1a 64 over the little-endian bytes of the bit patterns (as the script computes it).
    static func fnv1a64(_ values: [Float]) -> String {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for value in values {
            var word = value.bitPattern
            for _ in 0..<4 {
                hash ^= UInt64(word & 0xFF)
                hash = hash &* 0x0000_0100_0000_01B3
                word >>= 8
            }
        }
        let digits = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

/// A JSON scalar or number array from a stored scheduler config.
enum JSONValue: Decodable {
    case null, bool(Bool), int(Int), double(Double), string(String), doubles([Double])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let v = try? container.decode(Bool.self) { self = .bool(v) }
        else if let v = try? container.decode(Int.self) { self = .int(v) }
        else if let v = try? container.decode(Double.self) { self = .double(v) }
        else if let v = try? container.decode(String.self) { self = .string(v) }
        else { self = .doubles(try container.decode([Double].self)) }
    }

    var configValue: SchedulerConfig.Value {
        switch self {
        case .null: return .null
        case .bool(let v): return .bool(v)
        case .int(let v): return .int(v)
        case .double(let v): return .double(v)
        case .string(let v): return .string(v)
        case .doubles(let v): return .doubles(v)
        }
    }
}

struct RNGGoldens: Decodable {
    struct Draw: Decodable {
        let seed: UInt64?
        let count: Int
        let fnv1a64: String
        let bits: String?
        let head: String?
        let tail: String?
    }
    struct Sequence: Decodable {
        let seed: UInt64
        let draws: [Draw]
    }
    let single: [Draw]
    let sequences: [Sequence]
}

struct SchedulerGoldens: Decodable {
    struct Table: Decodable {
        let name: String
        let config: [String: JSONValue]
        let fnv1a64: String
        let alphasCumprod: String?
    }
    struct Expected: Decodable {
        let timesteps: [Double]
        let initNoiseSigma: Double
        let final: String
        let trajectoryAbsSum: [Double]
        let sigmas: String?
        let lmsCoefficients: [[Double]]?
        let addNoise: [AddNoise]?
    }
    struct AddNoise: Decodable {
        let stepIndex: Int
        let result: String
    }
    struct Case: Decodable {
        let name: String
        let steps: Int
        let config: [String: JSONValue]     // changes to baseConfig
        let drop: [String]                  // baseConfig keys removed
        let `class`: String
        let kind: String?
        let shape: [Int]?
        let seed: UInt64?
        /// Built as the model's own scheduler (from `_class_name`, nothing forced).
        let model: Bool?
        let expected: Expected
    }
    let baseConfig: [String: JSONValue]
    let tables: [Table]
    let cases: [Case]

    /// The stored config a case's scheduler was built from.
    func config(of golden: Case) -> [String: JSONValue] {
        var config = baseConfig.merging(golden.config) { $1 }
        for key in golden.drop { config[key] = nil }
        return config
    }
}

extension SchedulerConfig {
    init(json: [String: JSONValue]) throws {
        try self.init(diffusersConfig: json.mapValues(\.configValue))
    }
}
