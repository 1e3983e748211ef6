import XCTest
import SDTokenizer

/// Every prompt in goldens.json must give exactly the reference's ids.
final class CLIPTokenizerGoldenTests: XCTestCase {
    private struct Case {
        let prompt: String
        let padTokenID: Int32
        let ids: [Int32]      // tokenize(prompt), 77 ids
        let encoded: [Int32]  // encode(prompt), no BOS/EOS, not truncated
    }

    private func loadCases() throws -> [Case] {
        let cases = try XCTUnwrap(TokenizerFixtures.json("goldens.json")["cases"] as? [[String: Any]])
        return try cases.map { entry in
            Case(prompt: try XCTUnwrap(entry["prompt"] as? String),
                 padTokenID: Int32(try XCTUnwrap(entry["padTokenID"] as? Int)),
                 ids: try XCTUnwrap(entry["ids"] as? [Int]).map(Int32.init),
                 encoded: try XCTUnwrap(entry["encoded"] as? [Int]).map(Int32.init))
        }
    }

    func testGoldensCoverBothPadTokens() throws {
        let cases = try loadCases()
        XCTAssertGreaterThanOrEqual(cases.count, 60)
        XCTAssertTrue(cases.contains { $0.padTokenID == 49407 })
        XCTAssertTrue(cases.contains { $0.padTokenID == 0 })
    }

    func testEveryGoldenPrompt() throws {
        let bundled = CLIPTokenizer.bundled()
        var tokenizers: [Int32: CLIPTokenizer] = [bundled.padTokenID: bundled]
        var mismatches = 0
        for golden in try loadCases() {
            if tokenizers[golden.padTokenID] == nil {
                tokenizers[golden.padTokenID] = try CLIPTokenizer(
                    merges: bundled.merges, vocabulary: bundled.vocabulary, padTokenID: golden.padTokenID)
            }
            let tokenizer = tokenizers[golden.padTokenID]!
            let ids = tokenizer.tokenize(golden.prompt)
            let encoded = tokenizer.encode(golden.prompt)
            if ids != golden.ids || encoded != golden.encoded {
                mismatches += 1
                print("""
                    MISMATCH (pad \(golden.padTokenID)) prompt \(escaped(golden.prompt))
                      tokenize  expected \(golden.ids)
                                got      \(ids)
                      encode    expected \(golden.encoded)
                                got      \(encoded)
                    """)
            }
        }
        XCTAssertEqual(mismatches, 0, "prompts whose ids differ from the reference (printed above)")
    }
}
