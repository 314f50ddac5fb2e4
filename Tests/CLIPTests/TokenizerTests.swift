import Foundation
import TestSupport
import XCTest
@testable import CLIP

/// CLIPTokenizer against openai/CLIP's SimpleTokenizer / clip.tokenize (Goldens/tokenizer.json,
/// written by reference/tokenizer_goldens.py).
final class TokenizerTests: XCTestCase {
    struct Golden: Decodable {
        let text: String
        let ids: [Int]
        let tokens77: [Int32]
        let eot_index: Int
        let decoded: String
        let decoded_prefix: String
    }

    // Loaded once: the vocabulary takes a moment to parse in debug builds.
    static let shared = Result { try CLIPTokenizer() }

    func tokenizer() throws -> CLIPTokenizer { try Self.shared.get() }

    func goldens() throws -> [Golden] {
        let url = repoRoot.appendingPathComponent("Goldens/tokenizer.json")
        let goldens = try JSONDecoder().decode([Golden].self, from: Data(contentsOf: url))
        XCTAssertGreaterThan(goldens.count, 100)
        return goldens
    }

    /// Exact scalars: String == would accept canonically equivalent text ("é" == "e\u{301}").
    func scalars(_ s: String) -> [UInt32] { s.unicodeScalars.map(\.value) }

    func show(_ s: String) -> String { s.unicodeScalars.map { $0.escaped(asASCII: true) }.joined() }

    func testGoldenEncode() throws {
        let tok = try tokenizer()
        for g in try goldens() {
            XCTAssertEqual(tok.encode(g.text), g.ids, "encode(\"\(show(g.text))\")")
        }
    }

    func testGoldenTokenizeRowsAndEOT() throws {
        let tok = try tokenizer()
        let goldens = try goldens()
        let rows = tok.tokenize(goldens.map(\.text))
        let eots = CLIPTokenizer.eotIndices(rows)
        for (i, g) in goldens.enumerated() {
            XCTAssertEqual(rows[i], g.tokens77, "tokenize(\"\(show(g.text))\")")
            XCTAssertEqual(eots[i], g.eot_index, "EOT index of \"\(show(g.text))\"")
        }
        XCTAssertTrue(goldens.contains { $0.ids.count > 75 }, "goldens should exercise truncation")
    }

    func testGoldenDecode() throws {
        let tok = try tokenizer()
        for g in try goldens() {
            XCTAssertEqual(scalars(tok.decode(g.ids)), scalars(g.decoded), "decode of \"\(show(g.text))\"")
            XCTAssertEqual(scalars(tok.decode(Array(g.ids.prefix(g.ids.count / 2)))), scalars(g.decoded_prefix),
                           "decode of the first half of \"\(show(g.text))\"")
        }
    }

    func testRoundTripSimpleLowercaseText() throws {
        let tok = try tokenizer()
        for text in ["a photo of a cat", "the quick brown fox jumps over the lazy dog",
                     "yorkshire terrier", "antidisestablishmentarianism", "annual crop land"] {
            // decode ends every word with a space, as SimpleTokenizer.decode does.
            XCTAssertEqual(tok.decode(tok.encode(text)), text + " ")
        }
    }

    func testSpecialTokensAndShape() throws {
        let tok = try tokenizer()
        XCTAssertEqual(tok.vocabularySize, 49408)
        XCTAssertEqual(tok.decode([CLIPTokenizer.sot, CLIPTokenizer.eot]), "<|startoftext|><|endoftext|>")
        let rows = tok.tokenize(["", "a photo of a dog."], contextLength: 10)
        XCTAssertEqual(rows[0], [49406, 49407, 0, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(rows[1].count, 10)
        let long = tok.tokenize([String(repeating: "cat ", count: 100)], contextLength: 5)[0]
        XCTAssertEqual(long, [49406, 2368, 2368, 2368, 49407])
        XCTAssertEqual(CLIPTokenizer.eotIndices([long]), [4])
    }

    func testExplicitVocabularyPathMatchesBundle() throws {
        let url = repoRoot.appendingPathComponent("Sources/CLIP/Resources/bpe_simple_vocab_16e6.txt")
        let explicit = try CLIPTokenizer(vocabularyURL: url)
        XCTAssertEqual(explicit.encode("Crème brûlée 🐱 &amp; 2012"), try tokenizer().encode("Crème brûlée 🐱 &amp; 2012"))
    }

    func testMissingVocabularyNamesThePath() {
        let path = "/nonexistent/prompttune/bpe_missing_vocab.txt"
        XCTAssertThrowsError(try CLIPTokenizer(vocabularyURL: URL(fileURLWithPath: path))) { error in
            XCTAssertEqual(error as? CLIPTokenizerError, .vocabularyNotFound(path: path))
            XCTAssertTrue("\(error)".contains(path), "\(error)")
            XCTAssertTrue(error.localizedDescription.contains(path), error.localizedDescription)
        }
    }

    func testMalformedVocabularyNamesThePath() throws {
        let url = try makeTempDir(self).appendingPathComponent("bad-vocab.txt")
        try "#version: 0.2\ni n\nt h\n".write(to: url, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try CLIPTokenizer(vocabularyURL: url)) { error in
            guard case .malformedVocabulary(let path, _)? = error as? CLIPTokenizerError else {
                return XCTFail("unexpected error \(error)")
            }
            XCTAssertEqual(path, url.path)
            XCTAssertTrue("\(error)".contains(url.path), "\(error)")
        }
    }

    func testPythonLowerCasingAndPieces() {
        // str.lower(): 'İ' -> 'i' + U+0307, final sigma, Unicode-14 tables.
        XCTAssertEqual(scalars(CLIPTokenizer.normalize("İ")), [0x69, 0x307])
        XCTAssertEqual(CLIPTokenizer.normalize("ΟΔΟΣ ΟΔΟΣ."), "οδος οδος.")
        XCTAssertEqual(CLIPTokenizer.normalize("  A&amp;B\t\n C  "), "a&b c")
        XCTAssertEqual(CLIPTokenizer.pieces("It's 3.14, cat'ſ <|endoftext|>!"),
                       ["it", "'s", "3", ".", "1", "4", ",", "cat", "'ſ", "<|endoftext|>", "!"])
    }

    func testThousandPromptsAreFast() throws {
        let tok = try tokenizer()
        let names = (0..<1000).map { "a photo of a \(["Yorkshire Terrier", "Abyssinian", "Tesla Model S", "Annual Crop Land", "apple pie"][$0 % 5]) number \($0)." }
        let start = Date()
        let rows = tok.tokenize(names)
        let seconds = Date().timeIntervalSince(start)
        XCTAssertEqual(rows.count, 1000)
        XCTAssertLessThan(seconds, 1.0, "tokenizing 1000 prompts took \(seconds) s")
    }

    func testConcurrentEncodingAgrees() throws {
        let tok = try tokenizer()
        let texts = (0..<200).map { "a photo of item \($0) 🐱 naïve" }
        let expected = texts.map { tok.encode($0) }
        let lock = NSLock()
        var mismatches = 0
        DispatchQueue.concurrentPerform(iterations: texts.count) { i in
            if tok.encode(texts[i]) != expected[i] { lock.lock(); mismatches += 1; lock.unlock() }
        }
        XCTAssertEqual(mismatches, 0)
    }
}
