import Foundation

// Many / medium / few-shot accuracy (METHODS.md section 4). The long-tailed protocol groups
// classes by training count with LIFT's and BALLAD's thresholds (many > 100, few < 20) or OLTR's
// (many >= 100, few <= 20), a ``ShotRule``. Those thresholds put every class of a 16-shot grid in
// "few", so the tau grids use a rule of their own, ``ShotGroups/rule``. Every record and the report
// name the rule they used.

/// The frequency group of a training class.
public enum ShotGroup: String, CaseIterable, Codable, Sendable {
    case many, medium, few
}

/// The long-tailed protocol's rule: fixed thresholds on a class's training-image count.
public enum ShotRule: String, CaseIterable, Codable, Sendable {
    /// LIFT's and BALLAD's (the default): many > 100, medium 20...100, few < 20.
    case lift
    /// OLTR's original: many >= 100, medium 21...99, few <= 20.
    case oltr

    /// The rule as records (`shot_groups_rule`) and the report state it.
    public var description: String {
        switch self {
        case .lift:
            return "LIFT / BALLAD (shot_rule lift): a class with more than 100 training images is many-shot, 20 to 100 medium-shot, "
                + "fewer than 20 few-shot; a group's accuracy is the mean of its classes' accuracies"
        case .oltr:
            return "OLTR (shot_rule oltr): a class with 100 or more training images is many-shot, 21 to 99 medium-shot, "
                + "20 or fewer few-shot; a group's accuracy is the mean of its classes' accuracies"
        }
    }

    /// The group of a class with `count` training images.
    public func group(count: Int) -> ShotGroup {
        switch self {
        case .lift: return count > 100 ? .many : count < 20 ? .few : .medium
        case .oltr: return count >= 100 ? .many : count <= 20 ? .few : .medium
        }
    }

    /// The group of every class, from the training labels (`classNames` in label order).
    public func assign(classNames: [String], labels: [Int]) -> [String: ShotGroup] {
        ShotGroups.trainCounts(classNames: classNames, labels: labels).mapValues { group(count: $0) }
    }
}

public enum ShotGroups {
    /// The most training images per class for which a cell outside the long-tailed protocol uses
    /// ``rule`` (the tau protocol's head); a cell with a larger class (Candle's profile on whole
    /// splits) uses ``ShotRule/lift``.
    public static let tauRuleMaxShots = 16

    /// The rule, as records (`shot_groups_rule`) and the report state it.
    public static let rule = "training classes ranked by training count, largest first, ties in label order "
        + "(the order the tau protocol assigns counts in, so every tau puts the same classes in the same group); "
        + "the class at rank r (from 0) of C is many-shot if 3r < C, medium-shot if 3r < 2C, else few-shot; "
        + "a group's accuracy is the mean of its classes' accuracies; classes not trained on "
        + "(base-to-novel's novel classes, another dataset's classes) are in no group, so those sets have none"

    /// The group of every class, from the training labels (`classNames` in label order).
    public static func assign(classNames: [String], labels: [Int]) -> [String: ShotGroup] {
        let counts = trainCounts(classNames: classNames, labels: labels)
        let ranked = classNames.indices.sorted { a, b in
            let (ca, cb) = (counts[classNames[a]] ?? 0, counts[classNames[b]] ?? 0)
            return ca != cb ? ca > cb : a < b
        }
        let c = classNames.count
        var out: [String: ShotGroup] = [:]
        for (r, label) in ranked.enumerated() {
            out[classNames[label]] = 3 * r < c ? .many : 3 * r < 2 * c ? .medium : .few
        }
        return out
    }

    /// Training images per class name (classes of the draw without an image count 0).
    public static func trainCounts(classNames: [String], labels: [Int]) -> [String: Int] {
        var counts = Dictionary(uniqueKeysWithValues: classNames.map { ($0, 0) })
        for y in labels where classNames.indices.contains(y) { counts[classNames[y], default: 0] += 1 }
        return counts
    }

    /// The mean per-class accuracy of each group; empty unless every class of `perClass` is a
    /// training class (a set of other classes has no groups). A group without classes is absent.
    public static func accuracies(perClass: [String: Double], groups: [String: ShotGroup]) -> [ShotGroup: Double] {
        guard !perClass.isEmpty, perClass.keys.allSatisfy({ groups[$0] != nil }) else { return [:] }
        var sums: [ShotGroup: (Double, Int)] = [:]
        // Classes in name order: a dictionary's order changes with the process's hash seed, and
        // with it the sum's last digit.
        for name in perClass.keys.sorted() {
            let (g, accuracy) = (groups[name]!, perClass[name]!)
            let (s, n) = sums[g] ?? (0, 0)
            sums[g] = (s + accuracy, n + 1)
        }
        return sums.mapValues { $0.0 / Double($0.1) }
    }
}

extension EvaluationSummary {
    /// Sets `many_shot`, `medium_shot` and `few_shot` from the per-class accuracies.
    mutating func setShotGroups(_ groups: [String: ShotGroup]) {
        let a = ShotGroups.accuracies(perClass: perClassAccuracy, groups: groups)
        manyShot = a[.many]; mediumShot = a[.medium]; fewShot = a[.few]
    }
}
