import Foundation
import XCTest

/// Paths and scratch files shared by the format and converter tests.
enum TestFiles {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures").path
    static func fixture(_ name: String) -> String { fixtures + "/" + name }

    /// A fresh folder removed at the end of the test.
    static func scratch(_ test: XCTestCase) -> String {
        let dir = NSTemporaryDirectory() + "pocketsd-test-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    static func write(_ bytes: [UInt8], to path: String) {
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
    }

    static func contents(of dir: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: dir))?.sorted() ?? []
    }
}

/// Builds safetensors bytes: header JSON (given verbatim) and data.
func safetensorsBytes(header: String, data: [UInt8], declaredLength: UInt64? = nil) -> [UInt8] {
    var h = Array(header.utf8)
    while h.count % 8 != 0 { h.append(0x20) }
    var out: [UInt8] = []
    withUnsafeBytes(of: (declaredLength ?? UInt64(h.count)).littleEndian) { out.append(contentsOf: $0) }
    return out + h + data
}

func floatBytes(_ v: [Float]) -> [UInt8] { v.withUnsafeBytes { Array($0) } }
