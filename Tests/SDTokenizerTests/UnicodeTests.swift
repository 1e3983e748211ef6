@testable import SDTokenizer
import XCTest

/// The Swift runtime's Unicode data against the reference's (unicode.json), for every scalar:
/// a Swift or `tokenizers` upgrade that changes a class or a case mapping fails here first.
final class UnicodeTests: XCTestCase {
    private func scalarRanges(_ reference: [String: Any], _ key: String) throws -> [ClosedRange<UInt32>] {
        try XCTUnwrap(reference[key] as? [[Int]]).map { UInt32($0[0])...UInt32($0[1]) }
    }

    func testCharacterClassesOfEveryScalar() throws {
        let reference = try TokenizerFixtures.json("unicode.json")
        var expected = [CharacterClass](repeating: .other, count: 0x110000)
        for (key, cls) in [("whitespace", CharacterClass.whitespace), ("letter", .letter), ("number", .number)] {
            for range in try scalarRanges(reference, key) {
                for value in range { expected[Int(value)] = cls }
            }
        }
        var wrong: [String] = []
        for value in UInt32(0)..<0x110000 {
            guard let scalar = Unicode.Scalar(value) else { continue }
            let got = CharacterClass(scalar)
            if got != expected[Int(value)] {
                wrong.append("U+\(String(value, radix: 16)) \(got) (reference \(expected[Int(value)]))")
            }
        }
        XCTAssertEqual(wrong.count, 0, "first differences: \(wrong.prefix(20))")
    }

    func testLowercaseOfEveryScalar() throws {
        let reference = try TokenizerFixtures.json("unicode.json")
        var mapping: [UInt32: [UInt32]] = [:]
        for entry in try XCTUnwrap(reference["lowercase"] as? [[Any]]) {
            mapping[UInt32(try XCTUnwrap(entry[0] as? Int))] = try XCTUnwrap(entry[1] as? [Int]).map(UInt32.init)
        }
        XCTAssertGreaterThan(mapping.count, 1000)
        var wrong: [String] = []
        for value in UInt32(1)..<0x110000 {
            guard let scalar = Unicode.Scalar(value) else { continue }
            let bytes = Array(String(scalar).utf8)
            let lowered = bytes.withUnsafeBufferPointer { TextNormalizer.lowercased($0) }
            let got = String(decoding: lowered, as: UTF8.self).unicodeScalars.map(\.value)
            if got != mapping[value] ?? [value] {
                wrong.append("U+\(String(value, radix: 16)) -> \(got) (reference \(mapping[value] ?? [value]))")
            }
        }
        XCTAssertEqual(wrong.count, 0, "first differences: \(wrong.prefix(20))")
    }

    func testNFC() throws {
        let reference = try TokenizerFixtures.json("unicode.json")
        let cases = try XCTUnwrap(reference["nfc"] as? [[[Int]]])
        XCTAssertGreaterThan(cases.count, 1000)
        var wrong: [String] = []
        for pair in cases {
            var input = String.UnicodeScalarView()
            for value in pair[0] { input.append(try XCTUnwrap(Unicode.Scalar(UInt32(value)))) }
            let bytes = Array(String(input).utf8)
            let composed = bytes.withUnsafeBufferPointer { TextNormalizer.nfc($0) }
            let got = String(decoding: composed, as: UTF8.self).unicodeScalars.map { Int($0.value) }
            if got != pair[1] { wrong.append("\(pair[0]) -> \(got) (reference \(pair[1]))") }
        }
        XCTAssertEqual(wrong.count, 0, "first differences: \(wrong.prefix(20))")
    }
}
