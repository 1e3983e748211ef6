import Foundation
import SDConverter
import SDFormat
import XCTest

/// The mid-size parity model (tools/make_midsize_model.py), rebuilt from its recipe
/// Tests/Fixtures/mid-sd/weights.json: the weights are not in the repository, only the
/// generator that makes them. This writes the diffusers folder (configs from the recipe,
/// fp32 safetensors, the SD 1.x tokenizer) and converts it with the converter, as a user's
/// folder would be. Every tensor is checked against the CRC-32 the Python script recorded,
/// so the Swift and Python weights are the same bits.
enum MidSizeModel {
    static let root = PipelineGoldenTests.fixtures + "/mid-sd"
    static let golden = root + "/golden"

    enum RecipeError: Error, CustomStringConvertible {
        case malformed(String)
        case mismatch(String)
        var description: String {
            switch self {
            case .malformed(let s): "mid-sd recipe: \(s)"
            case .mismatch(let s): "mid-sd recipe: \(s) (rerun tools/make_midsize_model.py?)"
            }
        }
    }

    static let golden64: UInt64 = 0x9E37_79B9_7F4A_7C15

    static func splitmix64(_ x: UInt64) -> UInt64 {
        var z = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The recipe's generator (see "generator" in weights.json): element i of tensor
    /// `number` is offset + scale·u, u = (top 24 bits)/2²³ − 1 exactly, in Double, then Float.
    static func values(seed: UInt64, number: UInt64, count: Int, offset: Double, scale: Double) -> [Float] {
        let base = splitmix64(seed ^ (number &* golden64))
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            for i in 0..<count {
                let bits = splitmix64(base &+ UInt64(i + 1) &* golden64) >> 40
                let u = Double(bits) / Double(1 << 23) - 1
                buffer[i] = Float(offset + scale * u)
            }
            initialized = count
        }
    }

    /// zlib's CRC-32 (reflected, polynomial 0xEDB88320).
    static let crcTable: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        crcTable.withUnsafeBufferPointer { table in
            for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        }
        return c ^ 0xFFFF_FFFF
    }

    /// The model file, fp32, made once per test process in `scratch`.
    static func modelFile(scratch: String) throws -> String {
        let path = scratch + "/mid-sd-fp32.pdm"
        if FileManager.default.fileExists(atPath: path) { return path }
        let folder = scratch + "/mid-sd-diffusers"
        try writeDiffusersFolder(folder)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        _ = try Converter.convert(input: folder, output: path, options: ConversionOptions(weights: .fp32))
        return path
    }

    static func recipe() throws -> JSON {
        try JSON(parsing: String(contentsOfFile: root + "/weights.json", encoding: .utf8))
    }

    static func writeDiffusersFolder(_ folder: String) throws {
        let fm = FileManager.default
        let recipe = try recipe()
        guard let seed = recipe["seed"]?.int, let components = recipe["components"]?.object,
              let scheduler = recipe["scheduler_config"] else { throw RecipeError.malformed("seed, components or scheduler_config missing") }
        try? fm.removeItem(atPath: folder)
        for dir in ["", "/scheduler", "/tokenizer"] {
            try fm.createDirectory(atPath: folder + dir, withIntermediateDirectories: true)
        }
        var index = #"{"_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers", "PNDMScheduler"], "#
            + #""text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"], "#
        index += #""unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}"#
        try index.write(toFile: folder + "/model_index.json", atomically: false, encoding: .utf8)
        try scheduler.serialized.write(toFile: folder + "/scheduler/scheduler_config.json", atomically: false, encoding: .utf8)
        let tokenizer = PipelineGoldenTests.fixtures + "/tiny-sd-b/tokenizer"
        for name in try fm.contentsOfDirectory(atPath: tokenizer) {
            try fm.copyItem(atPath: tokenizer + "/" + name, toPath: folder + "/tokenizer/" + name)
        }
        for (name, component) in components {
            let dir = folder + "/" + name
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            guard let config = component["config"], let file = component["weights_file"]?.string,
                  let tensors = component["tensors"]?.array else { throw RecipeError.malformed("\(name): config, weights_file or tensors missing") }
            try config.serialized.write(toFile: dir + "/config.json", atomically: false, encoding: .utf8)
            try writeSafetensors(dir + "/" + file, tensors: tensors, seed: UInt64(seed))
        }
    }

    /// One fp32 safetensors file, tensor by tensor (the largest is 6 M floats).
    static func writeSafetensors(_ path: String, tensors: [JSON], seed: UInt64) throws {
        struct Entry { let key: String, shape: [Int], number: Int, offset: Double, scale: Double, crc: Int }
        let entries: [Entry] = try tensors.map { t in
            guard let key = t["key"]?.string, let shape = t["shape"]?.array?.compactMap(\.int), let number = t["number"]?.int,
                  let offset = t["offset"]?.double, let scale = t["scale"]?.double, let crc = t["crc32"]?.int,
                  shape.allSatisfy({ $0 > 0 && $0 <= 1 << 24 }), shape.reduce(1, *) <= 1 << 26
            else { throw RecipeError.malformed("bad tensor entry \(t.serialized.prefix(200))") }
            return Entry(key: key, shape: shape, number: number, offset: offset, scale: scale, crc: crc)
        }
        var header = #"{"__metadata__":{"format":"pt"}"#
        var position = 0
        for e in entries {
            let bytes = 4 * e.shape.reduce(1, *)
            header += #","\#(e.key)":{"dtype":"F32","shape":[\#(e.shape.map(String.init).joined(separator: ","))],"#
                + #""data_offsets":[\#(position),\#(position + bytes)]}"#
            position += bytes
        }
        header += "}"
        while header.utf8.count % 8 != 0 { header += " " }
        guard FileManager.default.createFile(atPath: path, contents: nil),
              let out = FileHandle(forWritingAtPath: path) else { throw RecipeError.malformed("cannot write \(path)") }
        defer { try? out.close() }
        var prefix = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { prefix.append(contentsOf: $0) }
        prefix.append(contentsOf: Array(header.utf8))
        try out.write(contentsOf: prefix)
        for e in entries {
            let v = values(seed: seed, number: UInt64(e.number), count: e.shape.reduce(1, *), offset: e.offset, scale: e.scale)
            let data = v.withUnsafeBytes { raw -> Data in
                let crc = crc32(raw)
                if Int(crc) != e.crc { return Data() }
                return Data(raw)
            }
            guard !data.isEmpty else { throw RecipeError.mismatch("\(e.key): CRC-32 differs from the recipe's") }
            try out.write(contentsOf: data)
        }
    }
}
