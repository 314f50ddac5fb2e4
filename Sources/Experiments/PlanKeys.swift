import Datasets
import Foundation
import PromptLearning
import Yams

/// A plan or option the grid cannot run with (an unknown key, an empty list, a dataset that is not
/// there, ...): nothing has run. The CLI exits with status 64 (EX_USAGE) for it, as for its other
/// usage errors.
public struct PlanError: Error, CustomStringConvertible, LocalizedError, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
    public var errorDescription: String? { description }
}

/// The keys a plan may hold, checked on the YAML itself before decoding (the decoder ignores keys
/// it does not know, so `epochz: 3` would silently train the recipe's epochs).
enum PlanKeys {
    static let topLevel = ["name", "protocol", "datasets", "targets", "methods", "shots", "seeds", "imbalance", "model", "root",
                           "out", "epochs", "lr", "batch_size", "views", "nc_every", "augment", "overrides", "imbalance_profile", "shot_rule"]
    static let override = ["epochs", "lr", "batch_size", "views", "term_weights", "term_parameters", "nc_every", "augment"]

    /// The `term_weights` keys `method` accepts: its loss terms' keys, and the keys older plans gave
    /// their parameters there (`tau`, DAPT's temperature). Nil when the method is unknown (reported elsewhere).
    static func termWeights(of method: String) -> [String]? { TermSettings.weightKeys(of: method) }

    /// Every key of the plan `text` is one the plan knows; otherwise a `PlanError` naming the key,
    /// its line and the closest valid key.
    static func check(yaml text: String, source: String) throws {
        try checkSize(yaml: text, source: source)
        guard let root = try compose(yaml: text), let top = root.mapping else { return }  // the decoder says what is wrong
        for (key, value) in top {
            let name = key.string ?? "\(key)"
            try known(name, among: topLevel, at: key, source: source, place: "at the top level")
            try checkType(value, of: name, expected: topLevelTypes[name], source: source, place: "'\(name)'")
            guard name == "overrides", let methods = value.mapping else { continue }
            for (methodKey, fields) in methods {
                let method = methodKey.string ?? "\(methodKey)"
                guard let fields = fields.mapping else { continue }
                for (fieldKey, field) in fields {
                    let fieldName = fieldKey.string ?? "\(fieldKey)"
                    try known(fieldName, among: override, at: fieldKey, source: source, place: "in overrides of \(method)")
                    try checkType(field, of: fieldName, expected: overrideTypes[fieldName], source: source, place: "'\(fieldName)' in overrides of \(method)")
                    guard let entries = field.mapping, let terms = TermSettings.terms(of: method) else { continue }
                    if fieldName == "term_weights", let keys = termWeights(of: method) {
                        for (termKey, _) in entries {
                            let term = termKey.string ?? "\(termKey)"
                            guard !keys.contains(term) else { continue }
                            let has = TermSettings.listing(terms)
                            throw PlanError("plan \(source), line \(line(termKey)): \(method) has no loss term '\(term)' in term_weights\(suggestion(term, terms.map(\.key))) (\(has))")
                        }
                    }
                    guard fieldName == "term_parameters" else { continue }
                    for (termKey, values) in entries {
                        let term = termKey.string ?? "\(termKey)"
                        if let problem = TermSettings.unknown(method: method, term: term, parameter: nil) {
                            throw PlanError("plan \(source), line \(line(termKey)): \(problem) in term_parameters")
                        }
                        for parameterKey in values.mapping.map({ Array($0.keys) }) ?? [] {
                            let parameter = parameterKey.string ?? "\(parameterKey)"
                            if let problem = TermSettings.unknown(method: method, term: term, parameter: parameter) {
                                throw PlanError("plan \(source), line \(line(parameterKey)): \(problem) in term_parameters")
                            }
                        }
                    }
                }
            }
        }
    }

    /// A plan is a few lines; Yams' parser recurses once per nesting level, and a 10 KB plan nested
    /// 5,000 deep overflowed the stack. Size and nesting are bounded on the text, before parsing.
    static let maxBytes = 1 << 20
    static let maxDepth = 64

    static func checkSize(yaml text: String, source: String) throws {
        guard text.utf8.count <= maxBytes else {
            throw PlanError("plan \(source) is \(text.utf8.count) bytes; a plan is at most \(maxBytes) bytes (a few lines of YAML): is this the right file?")
        }
        var flow = 0
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            // Block levels: the indentation and the "- " markers that open a line.
            var block = 0, rest = Substring(line)
            while let c = rest.first, c == " " || c == "-" || c == "\t" { if c == "-" { block += 2 }; block += 1; rest = rest.dropFirst() }
            var quote: Character?
            var deepest = flow
            for c in rest {
                if let q = quote { if c == q { quote = nil }; continue }
                switch c {
                case "\"", "'": quote = c
                case "[", "{": flow += 1; deepest = max(deepest, flow)
                case "]", "}": flow = max(0, flow - 1)
                default: break
                }
                if c == "#" && quote == nil { break }
            }
            if deepest + block / 2 > maxDepth {
                throw PlanError("plan \(source), line \(index + 1): nested more than \(maxDepth) levels deep; a plan's lists and maps nest a few levels at most (overrides: {method: {term_weights: {...}}})")
            }
        }
    }

    enum ValueType: String {
        case string = "a string", int = "a whole number", number = "a number", strings = "a list of strings"
        case ints = "a list of whole numbers", numbers = "a list of numbers", mapping = "a map of method names to settings"
        case numberMap = "a map of term names to numbers"
        case numberMaps = "a map of term names to maps of parameter names to numbers"
        case augmentation = "views or per-iteration"
        case shotRule = "lift or oltr"
        case imbalanceProfile = "tau or candle"
    }

    static let topLevelTypes: [String: ValueType] = [
        "name": .string, "protocol": .string, "datasets": .strings, "targets": .strings, "methods": .strings, "shots": .ints,
        "seeds": .ints, "imbalance": .numbers, "model": .string, "root": .string, "out": .string, "epochs": .int, "lr": .number,
        "batch_size": .int, "views": .int, "nc_every": .int, "augment": .augmentation, "overrides": .mapping,
        "shot_rule": .shotRule, "imbalance_profile": .imbalanceProfile,
    ]
    static let overrideTypes: [String: ValueType] = [
        "epochs": .int, "lr": .number, "batch_size": .int, "views": .int, "term_weights": .numberMap, "term_parameters": .numberMaps,
        "nc_every": .int, "augment": .augmentation,
    ]

    /// A value of the wrong type: a message naming the key, the value, the expected type and the line
    /// (the decoder's says only "Expected to decode Int but found a string").
    static func checkType(_ node: Node, of key: String, expected: ValueType?, source: String, place: String) throws {
        guard let expected else { return }
        func scalarOK(_ n: Node, _ t: ValueType) -> Bool {
            guard let s = n.scalar?.string, n.scalar?.style == .plain || t == .string || t == .strings || t == .augmentation || t == .shotRule || t == .imbalanceProfile else { return n.scalar != nil && t == .string }
            switch t {
            case .int, .ints: return Int(s) != nil
            case .number, .numbers, .numberMap: return Double(s) != nil || [".nan", ".NaN", ".inf", "-.inf", "+.inf", ".Inf", "-.Inf"].contains(s)
            case .augmentation: return Augmentation(rawValue: s) != nil
            case .shotRule: return ShotRule(rawValue: s) != nil
            case .imbalanceProfile: return ImbalanceProfile(rawValue: s) != nil
            default: return true
            }
        }
        func flow(_ n: Node) -> String {
            if let s = n.scalar?.string { return s }
            if let items = n.sequence { return "[" + items.map(flow).joined(separator: ", ") + "]" }
            if let m = n.mapping { return "{" + m.map { "\(flow($0.key)): \(flow($0.value))" }.joined(separator: ", ") + "}" }
            return "?"
        }
        func shown(_ n: Node) -> String {
            let text = flow(n)
            return text.count > 60 ? String(text.prefix(57)) + "..." : text
        }
        func fail(_ n: Node) -> PlanError {
            PlanError("plan \(source), line \(line(n)): \(place) is \(shown(n)), but it must be \(expected.rawValue)")
        }
        switch expected {
        case .string, .int, .number, .augmentation, .shotRule, .imbalanceProfile:
            guard node.scalar != nil, scalarOK(node, expected) else { throw fail(node) }
        case .strings, .ints, .numbers:
            guard let items = node.sequence, items.allSatisfy({ $0.scalar != nil && scalarOK($0, expected) }) else { throw fail(node) }
        case .mapping:
            guard let m = node.mapping, m.allSatisfy({ $0.key.scalar != nil && $0.value.mapping != nil }) else { throw fail(node) }
        case .numberMap:
            guard let m = node.mapping, m.allSatisfy({ $0.key.scalar != nil && $0.value.scalar != nil && scalarOK($0.value, .number) }) else { throw fail(node) }
        case .numberMaps:
            guard let m = node.mapping, m.allSatisfy({ term in
                term.key.scalar != nil && (term.value.mapping?.allSatisfy { $0.key.scalar != nil && $0.value.scalar != nil && scalarOK($0.value, .number) } ?? false)
            }) else { throw fail(node) }
        }
    }

    static func known(_ key: String, among keys: [String], at node: Node, source: String, place: String) throws {
        guard !keys.contains(key) else { return }
        throw PlanError("plan \(source), line \(line(node)): unknown key '\(key)' \(place)\(suggestion(key, keys)) (valid keys: \(keys.joined(separator: ", ")))")
    }

    static func line(_ node: Node) -> String { node.mark.map { String($0.line) } ?? "?" }

    /// "; did you mean 'epochs'?" for the nearest key within a few edits, else "".
    static func suggestion(_ key: String, _ keys: [String]) -> String {
        guard let best = keys.min(by: { editDistance(key, $0) < editDistance(key, $1) }),
              editDistance(key, best) <= max(2, key.count / 3) else { return "" }
        return "; did you mean \(best)?"
    }
}

/// Levenshtein distance (insertions, deletions and substitutions of characters).
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.lowercased()), b = Array(b.lowercased())
    if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
    var previous = Array(0...b.count)
    for i in 1...a.count {
        var current = [i] + [Int](repeating: 0, count: b.count)
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[b.count]
}

// MARK: - Writing a plan as the user wrote it

extension GridPlan {
    /// The plan as YAML, with numbers as a person writes them (0.25, 0.002, not 2.5e-1) and lists in
    /// flow style; `read(yaml:source:)` reads it back to an equal plan.
    public func yaml() throws -> String {
        func string(_ s: String) throws -> Node { try s.represented() }
        func number(_ x: Double) -> Node { Node(plainNumber(x)) }
        func list(_ nodes: [Node]) -> Node { Node(nodes, .implicit, .flow) }
        var pairs: [(Node, Node)] = []
        func add(_ key: String, _ value: Node?) { if let value { pairs.append((Node(key), value)) } }
        add("name", try name.map(string))
        add("protocol", try string(protocolKind.rawValue))
        add("datasets", list(try datasets.map(string)))
        add("targets", try targets.map { list(try $0.map(string)) })
        add("methods", list(try methods.map(string)))
        add("shots", list(shots.map { Node(String($0)) }))
        add("seeds", list(seeds.map { Node(String($0)) }))
        add("imbalance", list(imbalance.map(number)))
        add("model", try model.map(string))
        add("root", try root.map(string))
        add("out", try out.map(string))
        add("shot_rule", shotRule.map { Node($0.rawValue) })
        add("imbalance_profile", imbalanceProfile.map { Node($0.rawValue) })
        func recipe(_ o: RecipeOverride) -> [(Node, Node)] {
            var r: [(Node, Node)] = []
            if let e = o.epochs { r.append((Node("epochs"), Node(String(e)))) }
            if let lr = o.lr { r.append((Node("lr"), number(lr))) }
            if let b = o.batchSize { r.append((Node("batch_size"), Node(String(b)))) }
            if let v = o.views { r.append((Node("views"), Node(String(v)))) }
            if let w = o.termWeights, !w.isEmpty {
                r.append((Node("term_weights"), Node(w.sorted { $0.key < $1.key }.map { (Node($0.key), number($0.value)) }, .implicit, .flow)))
            }
            if let p = o.termParameters, !p.isEmpty {
                r.append((Node("term_parameters"), Node(p.sorted { $0.key < $1.key }.map {
                    (Node($0.key), Node($0.value.sorted { $0.key < $1.key }.map { (Node($0.key), number($0.value)) }, .implicit, .flow))
                }, .implicit, .flow)))
            }
            if let n = o.ncEvery { r.append((Node("nc_every"), Node(String(n)))) }
            if let a = o.augment { r.append((Node("augment"), Node(a.rawValue))) }
            return r
        }
        pairs += recipe(all)
        if !overrides.isEmpty {
            add("overrides", Node(try overrides.sorted { $0.key < $1.key }.map { (try string($0.key), Node(recipe($0.value), .implicit, .flow)) }))
        }
        return try serialize(node: Node(pairs))
    }
}

/// `x` as a person writes it: the shortest decimal that reads back as `x`, "1" for 1.0, and an
/// exponent only for very small or large numbers (with a decimal point, so YAML 1.1 reads a float).
func plainNumber(_ x: Double) -> String {
    if x == x.rounded(), abs(x) < 1e15 { return String(Int(x)) }
    var s = "\(x)"
    if let e = s.firstIndex(where: { $0 == "e" || $0 == "E" }), !s[..<e].contains(".") { s.insert(contentsOf: ".0", at: e) }
    return s
}
