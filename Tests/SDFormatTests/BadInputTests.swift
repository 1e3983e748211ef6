import Foundation
import SDConverter
import SDFormat
import XCTest

final class BadInputTests: XCTestCase {
    func assertFails(_ input: String, output: String? = nil, config: String? = nil, _ fragment: String,
                     file: StaticString = #filePath, line: UInt = #line) {
        let dir = TestFiles.scratch(self)
        let out = output ?? dir + "/out.pdm"
        XCTAssertThrowsError(try Converter.convert(input: input, output: out, options: ConversionOptions(weights: .int8, configFolder: config)),
                             file: file, line: line) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(fragment), "'\(text)' lacks '\(fragment)'", file: file, line: line)
            XCTAssertFalse(text.contains("\n"), "one line", file: file, line: line)
        }
        XCTAssertEqual(TestFiles.contents(of: dir), [], "no output or temporary file left", file: file, line: line)
    }

    /// A copy of the tiny diffusers folder that a test may damage.
    func folderCopy() -> String {
        let dir = TestFiles.scratch(self) + "/model"
        try! FileManager.default.copyItem(atPath: TestFiles.fixture("tiny-sd-a"), toPath: dir)
        return dir
    }

    func testMissingAndWrongInputs() {
        assertFails("/nonexistent/model", "no such file or folder")
        let empty = TestFiles.scratch(self)
        assertFails(empty, "no model_index.json")
        let text = TestFiles.scratch(self) + "/notes.txt"
        TestFiles.write(Array("just some text\n".utf8), to: text)
        assertFails(text, "not a safetensors file")
        let png = TestFiles.scratch(self) + "/image.png"
        TestFiles.write([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + [UInt8](repeating: 7, count: 64), to: png)
        assertFails(png, "not a safetensors file")
    }

    func testMissingComponent() throws {
        let dir = folderCopy()
        try FileManager.default.removeItem(atPath: dir + "/vae")
        assertFails(dir, "component folder vae/ is missing")
    }

    func testTruncatedWeights() throws {
        let dir = folderCopy()
        let path = dir + "/unet/diffusion_pytorch_model.fp16.safetensors"
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: path))
        assertFails(dir, "outside the file")
    }

    func testShapeDisagreeingWithConfig() throws {
        let dir = folderCopy()
        let path = dir + "/unet/config.json"
        let config = try String(contentsOfFile: path, encoding: .utf8)
        try config.replacingOccurrences(of: "\"cross_attention_dim\": 32", with: "\"cross_attention_dim\": 48")
            .write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertNotEqual(try String(contentsOfFile: path, encoding: .utf8), config, "fixture config format changed")
        assertFails(dir, "attn2.to_k.weight")
    }

    func testUnwritableOutput() {
        let input = TestFiles.fixture("tiny-sd-a")
        assertFails(input, output: "/nonexistent-dir/out.pdm", "does not exist")
        assertFails(input, output: TestFiles.fixture("tiny-sd-a/model_index.json") + "/out.pdm", "does not exist")
    }

    func testCorruptedModelFiles() throws {
        let dir = TestFiles.scratch(self)
        let path = dir + "/m.pdm"
        _ = try Converter.convert(input: TestFiles.fixture("tiny-sd-a"), output: path, options: ConversionOptions(weights: .fp16))
        let good = try Data(contentsOf: URL(fileURLWithPath: path))
        let file = try ModelFileReader(path: path)
        let victim = file.entries[file.entries.count / 2]

        func check(_ bytes: Data, _ fragment: String, line: UInt = #line) {
            let p = dir + "/bad.pdm"
            try! bytes.write(to: URL(fileURLWithPath: p))
            XCTAssertThrowsError(try ModelFileReader(path: p), line: line) { error in
                XCTAssertTrue("\(error)".contains(fragment), "\(error)", line: line)
            }
        }
        check(good.prefix(good.count - 100), "truncated")
        check(good.prefix(50), "not a PocketDiffusion model file")
        var header = good
        header[200] ^= 0xFF   // inside the metadata
        check(header, "checksum mismatch")
        check(Data("hello".utf8) + good, "not a PocketDiffusion model file")

        var data = good
        data[victim.dataRange.lowerBound + 1] ^= 0x55
        let p = dir + "/flipped.pdm"
        try data.write(to: URL(fileURLWithPath: p))
        XCTAssertEqual(try ModelFileReader(path: p).verify(), [victim.key], "verify names the damaged tensor")
    }
}
