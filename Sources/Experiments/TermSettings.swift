import Foundation
import PromptLearning

/// Setting a method's loss terms from plans (`term_weights`, `term_parameters`) and options
/// (`--term KEY=WEIGHT`, `--term KEY.PARAM=VALUE`), generically: whatever a term's type declares in
/// `LossTerms.table` (its key, parameters and their ranges) is what these accept.
public enum TermSettings {
    /// The loss terms of `method` as `Method.named` builds it; [] for the baselines, nil for a name
    /// that is no method.
    public static func terms(of method: String) -> [LossTerm]? {
        if method == "zeroshot" || method == "linear-probe" { return [] }
        return (try? Method.named(method))?.terms
    }

    /// The keys `term_weights` accepts for `method`: its terms' keys, and the keys an older plan
    /// gave their parameters there (`tau`, DAPT's temperature). Nil when the method is unknown.
    public static func weightKeys(of method: String) -> [String]? {
        guard let terms = terms(of: method) else { return nil }
        return terms.map(\.key) + terms.flatMap { $0.type.parameters.compactMap(\.legacyWeightKey) }
    }

    /// The term and parameter an older plan's `term_weights` key stands for (`tau`: inter.tau), if any.
    public static func legacyParameter(_ key: String, in terms: [LossTerm]) -> (term: String, parameter: String)? {
        guard !terms.contains(where: { $0.key == key }) else { return nil }
        for t in terms { if let p = t.type.parameters.first(where: { $0.legacyWeightKey == key }) { return (t.key, p.name) } }
        return nil
    }

    /// "(its terms: kg, inter)" or "(it has no loss terms besides cross-entropy)".
    static func listing(_ terms: [LossTerm]) -> String {
        terms.isEmpty ? "it has no loss terms besides cross-entropy" : "its terms: " + terms.map(\.key).joined(separator: ", ")
    }

    /// Why `method` has no parameter `parameter` of term `term` (with the closest name), or nil.
    /// `parameter` nil or "weight" is the term's weight.
    public static func unknown(method: String, term: String, parameter: String?) -> String? {
        guard let terms = terms(of: method) else { return "'\(method)' is not a method" }
        guard let t = terms.first(where: { $0.key == term }) else {
            return "\(method) has no loss term '\(term)'\(PlanKeys.suggestion(term, terms.map(\.key))) (\(listing(terms)))"
        }
        guard let parameter, parameter != TermParameter.weight.name else { return nil }
        let names = t.type.parameters.map(\.name)
        guard names.contains(parameter) else {
            let has = names.isEmpty ? "it has only a weight" : "its parameters: " + (["weight"] + names).joined(separator: ", ")
            return "loss term '\(term)' of \(method) has no parameter '\(parameter)'\(PlanKeys.suggestion(parameter, ["weight"] + names)) (\(has))"
        }
        return nil
    }

    /// The declaration of `term.parameter` (the weight's for nil or "weight"), if the table has it.
    public static func declaration(term: String, parameter: String?) -> TermParameter? {
        guard let parameter, parameter != TermParameter.weight.name else { return TermParameter.weight }
        return LossTerms.type(term)?.parameters.first { $0.name == parameter }
    }
}

/// One `--term` option: `KEY=WEIGHT` or `KEY.weight=WEIGHT` sets a term's weight, `KEY.PARAM=VALUE`
/// one of its parameters (`inter.tau=1`).
public struct TermSetting: Equatable, Sendable {
    public var term: String
    /// Nil for the weight.
    public var parameter: String?
    public var value: Double

    public init(term: String, parameter: String?, value: Double) {
        self.term = term; self.parameter = parameter == TermParameter.weight.name ? nil : parameter; self.value = value
    }

    /// Parses `KEY=VALUE` or `KEY.PARAM=VALUE`; a message saying what is wrong otherwise.
    public init(parsing text: String) throws {
        let parts = text.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty else {
            throw PlanError("--term '\(text)' must be KEY=WEIGHT or KEY.PARAM=VALUE (e.g. kg=4, inter.tau=1)")
        }
        let name = parts[0].split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard name.count <= 2, name.allSatisfy({ !$0.isEmpty }) else {
            throw PlanError("--term '\(text)': '\(parts[0])' must be a term key or KEY.PARAM (e.g. kg, inter.tau)")
        }
        guard let value = Double(parts[1].trimmingCharacters(in: .whitespaces)) else {
            throw PlanError("--term '\(text)': '\(parts[1])' is not a number")
        }
        self.init(term: name[0], parameter: name.count == 2 ? name[1] : nil, value: value)
    }

    /// `KEY` or `KEY.PARAM`, as written.
    public var name: String { parameter.map { "\(term).\($0)" } ?? term }

    /// Why `method` cannot take this setting (an unknown term or parameter, with the closest
    /// name, or a value out of the declared range), or nil.
    public func problem(method: String) -> String? {
        if let u = TermSettings.unknown(method: method, term: term, parameter: parameter) { return u }
        if let p = TermSettings.declaration(term: term, parameter: parameter)?.problem(value) { return "\(name) \(p)" }
        return nil
    }
}

extension Method {
    /// The method with a recipe's term weights (term key -> weight; an older plan's `tau` is
    /// DAPT's temperature, `inter.tau`) and term parameters (term key -> parameter -> value). A
    /// term or parameter the method does not have is an error; ranges are the plan's to check.
    public func withTermSettings(weights: [String: Double], parameters: [String: [String: Double]] = [:]) throws -> Method {
        var m = self
        func index(_ key: String) throws -> Int {
            guard let i = m.terms.firstIndex(where: { $0.key == key }) else {
                throw ExperimentError(.invalidSetting, "method \(name) has no loss term '\(key)' (\(TermSettings.listing(m.terms)))")
            }
            return i
        }
        for (key, value) in weights.sorted(by: { $0.key < $1.key }) {
            guard value.isFinite else { throw ExperimentError(.invalidSetting, "the weight of term '\(key)' must be finite (got \(value))") }
            if let (term, parameter) = TermSettings.legacyParameter(key, in: m.terms) {
                let i = try index(term)
                m.terms[i].parameters[parameter] = Float(value)
            } else {
                let i = try index(key)
                m.terms[i].weight = Float(value)
            }
        }
        for (key, values) in parameters.sorted(by: { $0.key < $1.key }) {
            let i = try index(key)
            for (parameter, value) in values.sorted(by: { $0.key < $1.key }) {
                guard value.isFinite else { throw ExperimentError(.invalidSetting, "parameter \(parameter) of term '\(key)' must be finite (got \(value))") }
                if parameter == TermParameter.weight.name { m.terms[i].weight = Float(value); continue }
                guard m.terms[i].type.parameters.contains(where: { $0.name == parameter }) else {
                    throw ExperimentError(.invalidSetting, "loss term '\(key)' of method \(name) has no parameter '\(parameter)' (its parameters: \(m.terms[i].type.parameters.map(\.name).joined(separator: ", ")))")
                }
                m.terms[i].parameters[parameter] = Float(value)
            }
        }
        return m
    }
}

extension GridPlan {
    /// Applies `run --term` to every method of the grid that has the term (as its override): an
    /// error when none has it (with the closest term key) or when the parameter or value is not one
    /// the term declares.
    public mutating func apply(_ setting: TermSetting) throws {
        let having = methods.filter { TermSettings.terms(of: $0)?.contains { $0.key == setting.term } ?? false }
        guard !having.isEmpty else {
            let keys = Array(Set(methods.flatMap { TermSettings.terms(of: $0)?.map(\.key) ?? [] })).sorted()
            let has = keys.isEmpty ? "they have no loss terms besides cross-entropy" : "their terms: " + keys.joined(separator: ", ")
            throw PlanError("--term \(setting.name): no method of the grid (\(methods.joined(separator: ", "))) has a loss term '\(setting.term)'\(PlanKeys.suggestion(setting.term, keys)) (\(has))")
        }
        for method in having {
            if let problem = setting.problem(method: method) { throw PlanError("--term \(setting.name): \(problem)") }
            var o = overrides[method] ?? RecipeOverride()
            if let parameter = setting.parameter {
                o.termParameters = o.termParameters ?? [:]
                o.termParameters![setting.term, default: [:]][parameter] = setting.value
            } else {
                o.termWeights = o.termWeights ?? [:]
                o.termWeights![setting.term] = setting.value
            }
            overrides[method] = o
        }
    }
}
