import Foundation

/// The text clean-up that openai/CLIP's `SimpleTokenizer.encode` runs before its regex:
/// `whitespace_clean(basic_clean(text)).lower()`, where
/// `basic_clean = ftfy.fix_text + html.unescape twice + strip` and
/// `whitespace_clean = re.sub(r'\s+', ' ') + strip`.
///
/// Everything works on Unicode scalars (code points), as Python strings do; Swift `Character`s
/// (grapheme clusters) and `String` equality (canonical equivalence) are never used.
///
/// What of `ftfy.fix_text` (ftfy 6.3, default configuration) is reproduced, with the same tables
/// (generated into TokenizerTables.swift by reference/tokenizer_tables.py):
/// - the per-line segments and the "auto" HTML rule (no entity decoding once a line holds `<`),
/// - `unescape_html` (semicolon-terminated HTML5 names, ftfy's upper-cased names, `&#...;`),
/// - `fix_c1_controls`, `fix_latin_ligatures`, `fix_character_width`, `uncurl_quotes`,
///   `fix_line_breaks`, `remove_terminal_escapes`, `remove_control_chars`, NFC normalisation,
/// - repeating all of that until the text stops changing, as `fix_and_explain` does.
///
/// Deliberately NOT reproduced: `fix_encoding` (mojibake detection and repair such as
/// "cafÃ©" -> "café", `restore_byte_a0`, `replace_lossy_sequences`, `decode_inconsistent_utf8`).
/// Text that ftfy judges to be mojibake can therefore tokenize differently; ordinary prompts and
/// class names are unaffected. `fix_surrogates` has no Swift counterpart (Swift strings cannot
/// hold lone surrogates).
///
/// Unicode versions: lower-casing follows Python 3.11 (Unicode 14), so scalars added later keep
/// their case; NFC uses the Swift runtime's tables, which only matters for scalars added after
/// Unicode 14.
enum TextCleaning {
    typealias Scalars = [Unicode.Scalar]

    /// `whitespace_clean(basic_clean(text)).lower()`.
    static func clean(_ text: String) -> Scalars {
        var s = ftfyFixText(Array(text.unicodeScalars))
        s = htmlUnescape(htmlUnescape(s))
        s = strip(s)
        s = collapseWhitespace(s)
        s = strip(s)
        return pythonLower(s)
    }

    // MARK: ftfy.fix_text

    static func ftfyFixText(_ text: Scalars) -> Scalars {
        var out = Scalars()
        out.reserveCapacity(text.count)
        var unescape = true
        var start = 0
        while start < text.count {
            var end = start
            while end < text.count && text[end] != "\n" { end += 1 }
            end = min(end + 1, text.count)  // the segment keeps its "\n"
            let segment = Array(text[start..<end])
            if unescape && segment.contains("<") { unescape = false }  // sticky, as in fix_text
            out += fixSegment(segment, unescapeHTML: unescape)
            start = end
        }
        return out
    }

    private static func fixSegment(_ segment: Scalars, unescapeHTML: Bool) -> Scalars {
        var text = segment
        while true {
            let original = text
            if unescapeHTML { text = ftfyUnescapeHTML(text) }
            text = translate(text, TokenizerTables.c1Controls)
            text = translate(text, TokenizerTables.latinLigatures)
            text = translate(text, TokenizerTables.characterWidth)
            text = uncurlQuotes(text)
            text = fixLineBreaks(text)
            text = removeTerminalEscapes(text)
            text = text.filter { !TokenizerTables.controlChars.contains($0.value) }
            text = nfc(text)
            if text == original { return text }
        }
    }

    private static func translate(_ text: Scalars, _ table: [UInt32: [UInt32]]) -> Scalars {
        guard text.contains(where: { table[$0.value] != nil }) else { return text }
        var out = Scalars()
        out.reserveCapacity(text.count)
        for u in text {
            if let repl = table[u.value] { out += repl.map { Unicode.Scalar($0)! } } else { out.append(u) }
        }
        return out
    }

    private static func uncurlQuotes(_ text: Scalars) -> Scalars {
        text.map { u in
            switch u.value {
            case 0x02BC, 0x2018...0x201B: return "'"
            case 0x201C...0x201F: return "\""
            default: return u
            }
        }
    }

    private static func fixLineBreaks(_ text: Scalars) -> Scalars {
        var out = Scalars()
        out.reserveCapacity(text.count)
        var i = 0
        while i < text.count {
            switch text[i].value {
            case 0x0D:
                out.append("\n")
                if i + 1 < text.count && text[i + 1] == "\n" { i += 1 }
            case 0x2028, 0x2029, 0x85: out.append("\n")
            default: out.append(text[i])
            }
            i += 1
        }
        return out
    }

    /// `\033\[((?:\d|;)*)([a-zA-Z])` removed (Python `re`: `\d` is any decimal digit).
    private static func removeTerminalEscapes(_ text: Scalars) -> Scalars {
        guard text.contains("\u{1B}") else { return text }
        var out = Scalars()
        var i = 0
        while i < text.count {
            if text[i] == "\u{1B}" && i + 1 < text.count && text[i + 1] == "[" {
                var j = i + 2
                while j < text.count && (text[j] == ";" || text[j].properties.generalCategory == .decimalNumber) { j += 1 }
                if j < text.count && text[j].isASCII && text[j].properties.isAlphabetic {
                    i = j + 1
                    continue
                }
            }
            out.append(text[i])
            i += 1
        }
        return out
    }

    static func nfc(_ text: Scalars) -> Scalars {
        // Scalars below U+0300 are all NFC_Quick_Check=Yes: nothing can change.
        guard text.contains(where: { $0.value >= 0x300 }) else { return text }
        var s = String.UnicodeScalarView()
        s.append(contentsOf: text)
        return Array(String(s).precomposedStringWithCanonicalMapping.unicodeScalars)
    }

    // MARK: HTML entities

    private static func parseEntities(_ table: String) -> [String: [Unicode.Scalar]] {
        var dict: [String: [Unicode.Scalar]] = [:]
        for line in table.split(separator: "\n") {
            let parts = line.split(separator: " ")
            dict[String(parts[0])] = parts.dropFirst().map { Unicode.Scalar(UInt32($0, radix: 16)!)! }
        }
        return dict
    }

    /// Names are ASCII, so `String` keys are safe here.
    private static let html5 = parseEntities(TokenizerTables.html5Entities)
    private static let ftfyUpper = parseEntities(TokenizerTables.ftfyUpperEntities)
    private static let longestHTML5Name = html5.keys.map(\.count).max() ?? 0

    private static func isASCIIAlnum(_ u: Unicode.Scalar) -> Bool {
        switch u.value {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
        default: return false
        }
    }

    private static func isASCIIDigit(_ u: Unicode.Scalar, hex: Bool) -> Bool {
        switch u.value {
        case 0x30...0x39: return true
        case 0x41...0x46, 0x61...0x66: return hex
        default: return false
        }
    }

    private static func string(_ s: ArraySlice<Unicode.Scalar>) -> String {
        var v = String.UnicodeScalarView()
        v.append(contentsOf: s)
        return String(v)
    }

    /// A numeric character reference's replacement, as html.unescape decodes it.
    private static func numericReference(_ digits: ArraySlice<Unicode.Scalar>, hex: Bool) -> Scalars {
        var num: UInt32 = 0
        for d in digits {
            num = min(num * (hex ? 16 : 10) + hexValue(d), 0x110000)  // saturate: all > 0x10FFFF alike
        }
        if let r = TokenizerTables.htmlInvalidCharrefs[num] { return r.map { Unicode.Scalar($0)! } }
        if (0xD800...0xDFFF).contains(num) || num > 0x10FFFF { return ["\u{FFFD}"] }
        if TokenizerTables.htmlInvalidCodepoints.contains(num) { return [] }
        return [Unicode.Scalar(num)!]
    }

    private static func hexValue(_ u: Unicode.Scalar) -> UInt32 {
        switch u.value {
        case 0x30...0x39: return u.value - 0x30
        case 0x41...0x46: return u.value - 0x41 + 10
        case 0x61...0x66: return u.value - 0x61 + 10
        default: return 0
        }
    }

    /// ftfy.fixes.unescape_html: `&#?[0-9A-Za-z]{1,24};` replaced when it names an entity.
    static func ftfyUnescapeHTML(_ text: Scalars) -> Scalars {
        guard text.contains("&") else { return text }
        var out = Scalars()
        out.reserveCapacity(text.count)
        var i = 0
        while i < text.count {
            if text[i] == "&" {
                let hash = i + 1 < text.count && text[i + 1] == "#"
                let nameStart = i + (hash ? 2 : 1)
                var j = nameStart
                while j < text.count && isASCIIAlnum(text[j]) { j += 1 }
                let n = j - nameStart
                if n >= 1 && n <= 24 && j < text.count && text[j] == ";" {
                    let whole = text[i...j]
                    if let r = replaceFTFYEntity(whole, hash: hash) {
                        out += r
                        i = j + 1
                        continue
                    }
                    // Unknown: ftfy keeps the match and resumes after it.
                    out += whole
                    i = j + 1
                    continue
                }
            }
            out.append(text[i])
            i += 1
        }
        return out
    }

    private static func replaceFTFYEntity(_ whole: ArraySlice<Unicode.Scalar>, hash: Bool) -> Scalars? {
        let name = string(whole.dropFirst())  // "name;" or "#123;"
        if let v = html5[name] ?? ftfyUpper[name] { return v }
        guard hash else { return nil }
        // html.unescape on the match; kept unless it consumed the ';'.
        let decoded = htmlUnescape(Array(whole))
        return decoded.contains(";") ? nil : decoded
    }

    /// Python's html.unescape.
    static func htmlUnescape(_ text: Scalars) -> Scalars {
        guard text.contains("&") else { return text }
        var out = Scalars()
        out.reserveCapacity(text.count)
        var i = 0
        while i < text.count {
            guard text[i] == "&", i + 1 < text.count else {
                out.append(text[i])
                i += 1
                continue
            }
            // '#[0-9]+;?' | '#[xX][0-9a-fA-F]+;?'
            if text[i + 1] == "#" {
                var k = i + 2
                var hex = false
                if k < text.count && (text[k] == "x" || text[k] == "X") {
                    hex = true
                    k += 1
                }
                var j = k
                while j < text.count && isASCIIDigit(text[j], hex: hex) { j += 1 }
                if j > k {
                    out += numericReference(text[k..<j], hex: hex)
                    i = (j < text.count && text[j] == ";") ? j + 1 : j
                    continue
                }
                out.append(text[i])  // '#' is excluded from names: no match here
                i += 1
                continue
            }
            // '[^\t\n\f <&#;]{1,32};?'
            var j = i + 1
            while j < text.count && j - (i + 1) < 32 && !"\t\n\u{0C} <&#;".unicodeScalars.contains(text[j]) { j += 1 }
            if j == i + 1 {
                out.append(text[i])
                i += 1
                continue
            }
            if j < text.count && text[j] == ";" { j += 1 }
            let ref = text[(i + 1)..<j]
            // Names are ASCII; only ASCII prefixes are looked up (Swift String keys compare by
            // canonical equivalence, e.g. U+212A KELVIN SIGN == "K").
            let asciiCount = ref.prefix(while: \.isASCII).count
            if asciiCount == ref.count, let v = html5[string(ref)] {
                out += v
            } else {
                // Longest prefix (at least 2 scalars) that is a name.
                var done = false
                var x = ref.count - 1
                while x > 1 {
                    if x <= min(asciiCount, longestHTML5Name), let v = html5[string(ref.prefix(x))] {
                        out += v
                        out += ref.dropFirst(x)
                        done = true
                        break
                    }
                    x -= 1
                }
                if !done {
                    out.append("&")
                    out += ref
                }
            }
            i = j
        }
        return out
    }

    // MARK: whitespace, case

    static func strip(_ text: Scalars) -> Scalars {
        var lo = 0, hi = text.count
        while lo < hi && TokenizerTables.pythonSpace.contains(text[lo].value) { lo += 1 }
        while hi > lo && TokenizerTables.pythonSpace.contains(text[hi - 1].value) { hi -= 1 }
        return Array(text[lo..<hi])
    }

    static func collapseWhitespace(_ text: Scalars) -> Scalars {
        var out = Scalars()
        out.reserveCapacity(text.count)
        var inSpace = false
        for u in text {
            if TokenizerTables.regexSpace.contains(u.value) {
                if !inSpace { out.append(" ") }
                inSpace = true
            } else {
                out.append(u)
                inSpace = false
            }
        }
        return out
    }

    /// Python 3.11's `str.lower()`: full lower-case mappings, the Final_Sigma rule for U+03A3, and
    /// no change for scalars newer than Python 3.11's Unicode 14 database.
    static func pythonLower(_ text: Scalars) -> Scalars {
        var out = Scalars()
        out.reserveCapacity(text.count)
        for (i, u) in text.enumerated() {
            if u.isASCII {
                out.append((0x41...0x5A).contains(u.value) ? Unicode.Scalar(u.value + 32)! : u)
            } else if u.value == 0x3A3 {
                out.append(isFinalSigma(text, i) ? "\u{3C2}" : "\u{3C3}")
            } else if inUnicode14(u) {
                out += u.properties.lowercaseMapping.unicodeScalars
            } else {
                out.append(u)
            }
        }
        return out
    }

    /// Assigned in Unicode 14.0, the database of Python 3.11's `str` methods?
    private static func inUnicode14(_ u: Unicode.Scalar) -> Bool {
        guard let age = u.properties.age else { return false }
        return age.major < 14 || (age.major == 14 && age.minor == 0)
    }

    private static func isCased(_ u: Unicode.Scalar) -> Bool { inUnicode14(u) && u.properties.isCased }
    private static func isCaseIgnorable(_ u: Unicode.Scalar) -> Bool { inUnicode14(u) && u.properties.isCaseIgnorable }

    /// `\p{cased}\p{case-ignorable}* U+03A3 !(\p{case-ignorable}* \p{cased})`, as CPython tests it.
    private static func isFinalSigma(_ text: Scalars, _ i: Int) -> Bool {
        var j = i - 1
        while j >= 0 && isCaseIgnorable(text[j]) { j -= 1 }
        guard j >= 0 && isCased(text[j]) else { return false }
        j = i + 1
        while j < text.count && isCaseIgnorable(text[j]) { j += 1 }
        return j == text.count || !isCased(text[j])
    }
}
