import Glibc

/// NumPy `.npy` arrays (format version 1.0/2.0), little-endian, C order: float32 and
/// int32/int64/uint8 for reading goldens, float32 for writing latents.
public struct NPYArray: Sendable {
    /// The array's elements, flat in C order, in their stored type.
    public enum Values: Sendable { case float32([Float]), int32([Int32]), int64([Int64]), uint8([UInt8]) }
    /// Dimensions, outermost first.
    public let shape: [Int]
    /// The elements, flat in C (row-major) order.
    public let values: Values

    /// A float32 array; `floats.count` must equal the product of `shape`.
    public init(shape: [Int], floats: [Float]) {
        precondition(shape.reduce(1, *) == floats.count)
        self.shape = shape
        self.values = .float32(floats)
    }

    /// The elements converted to Float.
    public var floats: [Float] {
        switch values {
        case .float32(let v): return v
        case .int32(let v): return v.map(Float.init)
        case .int64(let v): return v.map(Float.init)
        case .uint8(let v): return v.map(Float.init)
        }
    }

    /// The elements converted to Int (floats truncated toward zero).
    public var ints: [Int] {
        switch values {
        case .float32(let v): return v.map { Int($0) }
        case .int32(let v): return v.map(Int.init)
        case .int64(let v): return v.map(Int.init)
        case .uint8(let v): return v.map(Int.init)
        }
    }

    /// Reads a .npy file; throws `FormatError` for a malformed file or an unsupported dtype.
    public init(path: String) throws {
        let file = try MappedFile(path: path)
        let b = file.bytes
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard b.count >= 10, Array(b[0..<6]) == magic else { throw FormatError(path, "not a .npy file") }
        let major = b[6]
        let headerLength: Int, headerStart: Int
        if major == 1 {
            headerLength = Int(b[8]) | Int(b[9]) << 8
            headerStart = 10
        } else {
            guard b.count >= 12 else { throw FormatError(path, "truncated .npy header") }
            headerLength = Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24
            headerStart = 12
        }
        guard headerStart + headerLength <= b.count else { throw FormatError(path, "truncated .npy header") }
        let header = String(decoding: b[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        func field(_ name: String) -> Substring? {
            guard let r = header.range(of: "'\(name)':") else { return nil }
            return header[r.upperBound...].drop(while: { $0 == " " })
        }
        guard let descrField = field("descr"), let fortranField = field("fortran_order"),
              let shapeField = field("shape") else { throw FormatError(path, "bad .npy header") }
        let descr = String(descrField.dropFirst().prefix(while: { $0 != "'" }))
        guard fortranField.hasPrefix("False") else { throw FormatError(path, "Fortran-order .npy is not supported") }
        let dims = shapeField.dropFirst().prefix(while: { $0 != ")" })
        let shape = dims.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: " ")) }
        let count = shape.reduce(1, *)
        let dataStart = headerStart + headerLength
        func load<T>(_ type: T.Type) throws -> [T] {
            guard dataStart + count * MemoryLayout<T>.size <= b.count else { throw FormatError(path, "truncated .npy data") }
            return (0..<count).map { (file.base + dataStart).loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self) }
        }
        switch descr {
        case "<f4": values = .float32(try load(Float.self))
        case "<i4": values = .int32(try load(Int32.self))
        case "<i8": values = .int64(try load(Int64.self))
        case "|u1", "<u1": values = .uint8(try load(UInt8.self))
        default: throw FormatError(path, "unsupported .npy dtype \(descr)")
        }
        self.shape = shape
    }

    /// The bytes of a float32 `.npy` file (version 1.0).
    public static func encode(shape: [Int], floats: [Float]) -> [UInt8] {
        let dims = shape.count == 1 ? "\(shape[0])," : shape.map(String.init).joined(separator: ", ")
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(dims)), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var out: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0]
        out.append(UInt8(header.utf8.count & 0xFF))
        out.append(UInt8(header.utf8.count >> 8))
        out.append(contentsOf: header.utf8)
        floats.withUnsafeBytes { out.append(contentsOf: $0) }
        return out
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> Substring {
        var s = self
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return s
    }
}

extension String {
    fileprivate func range(of needle: String) -> Range<String.Index>? {
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(needle) { return i..<index(i, offsetBy: needle.count) }
            i = index(after: i)
        }
        return nil
    }
}
