import SDFormat
import XCTest

final class SafetensorsTests: XCTestCase {
    func open(_ bytes: [UInt8]) throws -> SafetensorsFile {
        let path = TestFiles.scratch(self) + "/t.safetensors"
        TestFiles.write(bytes, to: path)
        return try SafetensorsFile(path: path)
    }

    func assertRejects(_ bytes: [UInt8], _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try open(bytes), file: file, line: line) { error in
            guard let e = error as? FormatError else { return XCTFail("not a FormatError: \(error)", file: file, line: line) }
            XCTAssertTrue(e.message.contains(fragment), "'\(e.message)' lacks '\(fragment)'", file: file, line: line)
            XCTAssertTrue(e.description.hasPrefix(e.path), file: file, line: line)
        }
    }

    let goodHeader = #"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[3],"data_offsets":[16,22]}}"#

    func testReadsTensorsAndMetadata() throws {
        let halfs: [Float16] = [1, -2, 0.5]
        let data = floatBytes([1, 2, 3, 4]) + halfs.withUnsafeBytes { Array($0) }
        let st = try open(safetensorsBytes(header: goodHeader, data: data))
        XCTAssertEqual(st.tensorKeys.sorted(), ["a", "b"])
        XCTAssertEqual(st.metadata.first?.1, "pt")
        XCTAssertEqual(st.tensor("a")?.floats(), [1, 2, 3, 4])
        XCTAssertEqual(st.tensor("b")?.floats(), [1, -2, 0.5])
        XCTAssertEqual(st.tensor("a")?.shape, [2, 2])
        XCTAssertNil(st.tensor("c"))
    }

    func testRejectsBadFiles() {
        let data = floatBytes([1, 2, 3, 4]) + [0, 0, 0, 0, 0, 0]
        assertRejects([1, 2, 3], "too short")
        assertRejects(safetensorsBytes(header: goodHeader, data: data, declaredLength: 1 << 40), "does not fit")
        assertRejects(safetensorsBytes(header: #"{"a": {"dtype": "F32", "shape": [2,2], "data_offsets": [0,16]"#, data: data), "malformed JSON")
        assertRejects(safetensorsBytes(header: #"{"a":{"dtype":"Q4","shape":[4],"data_offsets":[0,2]}}"#, data: data), "unknown dtype Q4")
        assertRejects(safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[100],"data_offsets":[0,400]}}"#, data: data), "outside the file")
        assertRejects(safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#, data: data), "16 bytes for shape [3]")
        assertRejects(safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, data: data), "overlap")
        assertRejects(safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}"#, data: data), "bad shape")
        // Truncated: the data section is cut short.
        assertRejects(safetensorsBytes(header: goodHeader, data: Array(data.prefix(12))), "outside the file")
        // A text file and a PNG are not models.
        assertRejects(Array("hello, this is a text file, not a model\n".utf8), "not a safetensors file")
        assertRejects([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52], "not a safetensors file")
    }

    func testMissingFile() {
        XCTAssertThrowsError(try SafetensorsFile(path: "/nonexistent/x.safetensors")) { error in
            XCTAssertTrue("\(error)".contains("cannot open"))
        }
    }
}

final class JSONTests: XCTestCase {
    func testParsesAndSerializes() throws {
        let j = try JSON(parsing: #"{"a": [1, 2.5, -3e2, true, null], "b": "x\"\u00e9\ud83d\ude00", "c": {}}"#)
        XCTAssertEqual(j["a"]?.array?.count, 5)
        XCTAssertEqual(j["a"]?.array?[2].double, -300)
        XCTAssertEqual(j["b"]?.string, "x\"é😀")
        XCTAssertEqual(try JSON(parsing: j.serialized), j)
        XCTAssertEqual(j["a"]?.array?[1].int, nil, "2.5 is not an integer")
    }

    func testRejectsMalformed() {
        for text in ["", "{", "[1,]", "{\"a\" 1}", "tru", "\"abc", "1 2", "{\"a\":1,}", "\"\\ud800\"", String(repeating: "[", count: 1000)] {
            XCTAssertThrowsError(try JSON(parsing: text), "accepted \(text.prefix(20))")
        }
    }
}
