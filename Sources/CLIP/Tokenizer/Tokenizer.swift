import Foundation

/// Errors from loading CLIP's BPE vocabulary.
public enum CLIPTokenizerError: Error, Equatable, CustomStringConvertible, LocalizedError {
    case vocabularyNotFound(path: String)
    case malformedVocabulary(path: String, reason: String)

    public var description: String {
        switch self {
        case .vocabularyNotFound(let path):
            return "CLIP BPE vocabulary not found at \(path)"
        case .malformedVocabulary(let path, let reason):
            return "CLIP BPE vocabulary at \(path) is malformed: \(reason)"
        }
    }

    public var errorDescription: String? { description }
}

/// CLIP's byte-level BPE tokenizer: a port of openai/CLIP's `SimpleTokenizer` (`encode`, `decode`)
/// and `clip.tokenize(..., truncate=True)`, giving the same ids.
///
/// Pipeline, as in `SimpleTokenizer.encode`: text clean-up (a subset of `ftfy.fix_text`, then
/// `html.unescape` twice, whitespace collapsing, Python's `str.lower()`; see `TextCleaning` for
/// what of ftfy is and is not reproduced: mojibake repair is not), then the pattern
/// `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
/// (Python `regex`, IGNORECASE) run by a hand-written scanner over Unicode scalars, then
/// byte-level BPE with the `</w>` end-of-word marker. Results of BPE are cached per word.
public final class CLIPTokenizer: @unchecked Sendable {
    /// `<|startoftext|>` and `<|endoftext|>`.
    public static let sot = 49406
    public static let eot = 49407
    /// The file name of the bundled vocabulary.
    public static let bundledVocabularyName = "bpe_simple_vocab_16e6.txt"
    /// openai keeps lines [1, 49152 - 256 - 2 + 1) of the file: 48894 merges.
    static let mergeCount = 49152 - 256 - 2

    /// Number of ids: 256 bytes, 256 bytes + `</w>`, the merges, SOT, EOT (49408).
    public let vocabularySize: Int

    /// byte -> id of its single-byte token (bytes_to_unicode order); `+ 256` for the `</w>` form.
    private let byteID: [Int32]
    /// (left id << 32 | right id) -> rank of the merge.
    private let mergeRanks: [UInt64: Int32]
    /// rank -> id of the merged token.
    private let mergedID: [Int32]
    /// id -> the bytes its token stands for (`</w>` included as the four ASCII bytes).
    private let idBytes: [[UInt8]]

    private let lock = NSLock()
    private var cache: [[UInt8]: [Int32]] = [:]
    private static let cacheLimit = 100_000

    /// Loads the merges from `vocabularyURL`, or from the bundled
    /// `bpe_simple_vocab_16e6.txt` when it is nil (uncompressed; the first line is a header).
    public init(vocabularyURL: URL? = nil) throws {
        let url: URL
        if let vocabularyURL {
            url = vocabularyURL
        } else if let bundled = Bundle.module.url(forResource: "bpe_simple_vocab_16e6", withExtension: "txt") {
            url = bundled
        } else {
            throw CLIPTokenizerError.vocabularyNotFound(path: "\(Self.bundledVocabularyName) in the CLIP resource bundle")
        }
        let path = url.path
        guard FileManager.default.fileExists(atPath: path) else {
            throw CLIPTokenizerError.vocabularyNotFound(path: path)
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw CLIPTokenizerError.malformedVocabulary(path: path, reason: "cannot be read (\(error))")
        }

        // bytes_to_unicode: printable bytes map to themselves' code points, the others to 256 + n.
        var bs = Array(33...126) + Array(161...172) + Array(174...255)
        var cs = bs
        var n = 0
        for b in 0..<256 where !bs.contains(b) {
            bs.append(b)
            cs.append(256 + n)
            n += 1
        }
        var byteID = [Int32](repeating: 0, count: 256)
        var byteDecoder: [UInt32: UInt8] = [:]
        for (i, b) in bs.enumerated() {
            byteID[b] = Int32(i)
            byteDecoder[UInt32(cs[i])] = UInt8(b)
        }

        // Vocabulary keyed by the UTF-8 of each token string (exact, unlike String equality).
        var tokens: [[UInt8]] = cs.map { Array(String(Unicode.Scalar(UInt32($0))!).utf8) }
        tokens += tokens.map { $0 + Array("</w>".utf8) }

        let merges = try Self.readMerges(data, path: path)
        tokens += merges.map { $0.0 + $0.1 }
        tokens.append(Array("<|startoftext|>".utf8))
        tokens.append(Array("<|endoftext|>".utf8))

        var encoder: [[UInt8]: Int32] = [:]
        encoder.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() { encoder[t] = Int32(i) }  // later entries win, as dict(zip())

        var ranks: [UInt64: Int32] = [:]
        ranks.reserveCapacity(merges.count)
        var merged = [Int32](repeating: -1, count: merges.count)
        for (r, m) in merges.enumerated() {
            // A merge whose halves are not tokens can never apply (symbols are always tokens).
            guard let a = encoder[m.0], let b = encoder[m.1] else { continue }
            ranks[UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))] = Int32(r)
            merged[r] = encoder[m.0 + m.1]!
        }

        var idBytes: [[UInt8]] = []
        idBytes.reserveCapacity(tokens.count)
        for t in tokens {
            var out: [UInt8] = []
            for u in String(decoding: t, as: UTF8.self).unicodeScalars {
                guard let b = byteDecoder[u.value] else {
                    throw CLIPTokenizerError.malformedVocabulary(
                        path: path, reason: "token \(String(decoding: t, as: UTF8.self)) uses U+\(String(u.value, radix: 16, uppercase: true)), which is not a byte symbol")
                }
                out.append(b)
            }
            idBytes.append(out)
        }

        self.vocabularySize = tokens.count
        self.byteID = byteID
        self.mergeRanks = ranks
        self.mergedID = merged
        self.idBytes = idBytes
    }

    /// The merge lines of the file (lines 1 ..< 1 + mergeCount), each split at its space.
    private static func readMerges(_ data: Data, path: String) throws -> [([UInt8], [UInt8])] {
        let bytes = [UInt8](data)
        if bytes.starts(with: [0x1F, 0x8B]) {
            throw CLIPTokenizerError.malformedVocabulary(path: path, reason: "gzip-compressed; expected the uncompressed text file")
        }
        var merges: [([UInt8], [UInt8])] = []
        merges.reserveCapacity(mergeCount)
        var line = 0
        var start = 0
        while merges.count < mergeCount && start <= bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != 0x0A { end += 1 }
            if line > 0 {
                let parts = bytes[start..<end].split(whereSeparator: { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D })
                guard parts.count == 2 else {
                    throw CLIPTokenizerError.malformedVocabulary(
                        path: path, reason: "line \(line + 1) should hold two space-separated symbols, found \(parts.count)")
                }
                merges.append((Array(parts[0]), Array(parts[1])))
            }
            line += 1
            start = end + 1
        }
        guard merges.count == mergeCount else {
            throw CLIPTokenizerError.malformedVocabulary(
                path: path, reason: "expected a header line and \(mergeCount) merge lines, found \(merges.count) merges")
        }
        return merges
    }

    // MARK: Encoding

    /// BPE ids of `text`, without SOT/EOT (openai's `SimpleTokenizer.encode`).
    public func encode(_ text: String) -> [Int] {
        let cleaned = TextCleaning.clean(text)
        var ids: [Int] = []
        for range in Self.preTokenize(cleaned) {
            var word: [UInt8] = []
            for u in cleaned[range] { word += UTF8.encode(u)! }
            ids += bpe(word).lazy.map(Int.init)
        }
        return ids
    }

    /// The text `encode` sees: cleaned and lower-cased as `SimpleTokenizer.encode` does.
    public static func normalize(_ text: String) -> String {
        var v = String.UnicodeScalarView()
        v.append(contentsOf: TextCleaning.clean(text))
        return String(v)
    }

    /// The pieces `encode` sends to BPE (the regex matches), as strings.
    public static func pieces(_ text: String) -> [String] {
        let cleaned = TextCleaning.clean(text)
        return preTokenize(cleaned).map { r in
            var v = String.UnicodeScalarView()
            v.append(contentsOf: cleaned[r])
            return String(v)
        }
    }

    /// `clip.tokenize(texts, context_length, truncate=True)`: one row per text, SOT + ids + EOT,
    /// zero-padded; rows that are too long are cut to `contextLength` with EOT as the last id.
    public func tokenize(_ texts: [String], contextLength: Int = 77) -> [[Int32]] {
        precondition(contextLength >= 2, "contextLength must hold SOT and EOT")
        return texts.map { text in
            var ids = [Int32(Self.sot)] + encode(text).map(Int32.init) + [Int32(Self.eot)]
            if ids.count > contextLength {
                ids.removeLast(ids.count - contextLength)
                ids[contextLength - 1] = Int32(Self.eot)
            }
            return ids + [Int32](repeating: 0, count: contextLength - ids.count)
        }
    }

    /// The EOT position of each row: the index of its highest id (first one on ties), which is
    /// where CLIP's text tower reads the features (`x[arange, text.argmax(dim=-1)]`).
    public static func eotIndices(_ rows: [[Int32]]) -> [Int] {
        rows.map { row in
            var best = 0
            for (i, v) in row.enumerated() where v > row[best] { best = i }
            return best
        }
    }

    /// The BPE ids of one pre-token (its UTF-8 bytes).
    func bpe(_ word: [UInt8]) -> [Int32] {
        if word.elementsEqual("<|startoftext|>".utf8) { return [Int32(Self.sot)] }
        if word.elementsEqual("<|endoftext|>".utf8) { return [Int32(Self.eot)] }
        lock.lock()
        let hit = cache[word]
        lock.unlock()
        if let hit { return hit }

        var symbols = word.map { byteID[Int($0)] }
        symbols[symbols.count - 1] += 256  // the </w> form of the last byte
        while symbols.count > 1 {
            var bestRank = Int32.max
            var first: Int32 = 0, second: Int32 = 0
            for i in 0..<(symbols.count - 1) {
                if let r = mergeRanks[Self.pairKey(symbols[i], symbols[i + 1])], r < bestRank {
                    bestRank = r
                    first = symbols[i]
                    second = symbols[i + 1]
                }
            }
            if bestRank == Int32.max { break }
            let m = mergedID[Int(bestRank)]
            var next: [Int32] = []
            next.reserveCapacity(symbols.count)
            var i = 0
            while i < symbols.count {
                if i + 1 < symbols.count && symbols[i] == first && symbols[i + 1] == second {
                    next.append(m)
                    i += 2
                } else {
                    next.append(symbols[i])
                    i += 1
                }
            }
            symbols = next
        }

        lock.lock()
        if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
        cache[word] = symbols
        lock.unlock()
        return symbols
    }

    @inline(__always) private static func pairKey(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    // MARK: Pre-tokenization (the regex)

    private enum Class { case letter, number, other, none }

    private static func classify(_ u: Unicode.Scalar) -> Class {
        let v = u.value
        if v < 0x80 {
            switch v {
            case 0x41...0x5A, 0x61...0x7A: return .letter
            case 0x30...0x39: return .number
            case 0x09...0x0D, 0x20: return .none
            default: return .other
            }
        }
        // `regex` with IGNORECASE: U+0345 COMBINING GREEK YPOGEGRAMMENI case-folds to a letter
        // (iota), so it is not in [^\s\p{L}\p{N}] either; it matches no alternative.
        if v == 0x345 || TokenizerTables.regexSpace.contains(v) { return .none }
        switch u.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    /// Does `literal` match at `i`, case-insensitively as `regex` does for the lower-cased text
    /// (where the only non-ASCII scalar left that folds to one of these letters is U+017F 'ſ' = s)?
    private static func matches(_ text: [Unicode.Scalar], _ i: Int, _ literal: String) -> Bool {
        var j = i
        for c in literal.unicodeScalars {
            guard j < text.count else { return false }
            let t = text[j]
            guard t == c || (c == "s" && t == "\u{17F}") else { return false }
            j += 1
        }
        return true
    }

    private static let specials = ["<|startoftext|>", "<|endoftext|>"]
    private static let contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]

    /// The ranges of `re.findall(pat, text)`.
    static func preTokenize(_ text: [Unicode.Scalar]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var i = 0
        scan: while i < text.count {
            if text[i] == "<" {
                for s in specials where matches(text, i, s) {
                    let n = s.unicodeScalars.count
                    out.append(i..<(i + n))
                    i += n
                    continue scan
                }
            } else if text[i] == "'" {
                for s in contractions where matches(text, i, s) {
                    let n = s.unicodeScalars.count
                    out.append(i..<(i + n))
                    i += n
                    continue scan
                }
            }
            let c = classify(text[i])
            switch c {
            case .none:
                i += 1
            case .number:
                out.append(i..<(i + 1))
                i += 1
            case .letter, .other:
                var j = i + 1
                while j < text.count && classify(text[j]) == c { j += 1 }
                out.append(i..<j)
                i = j
            }
        }
        return out
    }

    // MARK: Decoding

    /// Text of `ids` (openai's `SimpleTokenizer.decode`): bytes joined, decoded as UTF-8 with
    /// U+FFFD for invalid sequences, `</w>` replaced by a space. Ids outside the vocabulary are skipped.
    public func decode(_ ids: [Int]) -> String {
        var bytes: [UInt8] = []
        for id in ids where id >= 0 && id < idBytes.count { bytes += idBytes[id] }
        let scalars = Array(String(decoding: bytes, as: UTF8.self).unicodeScalars)
        let marker = Array("</w>".unicodeScalars)
        var out = String.UnicodeScalarView()
        var i = 0
        while i < scalars.count {
            if i + 4 <= scalars.count && scalars[i..<(i + 4)].elementsEqual(marker) {
                out.append(" ")
                i += 4
            } else {
                out.append(scalars[i])
                i += 1
            }
        }
        return String(out)
    }
}
