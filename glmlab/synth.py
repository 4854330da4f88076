"""Synthetic data a small model can really learn: a general corpus, and the two fine-tuning tasks.

    python -m glmlab.synth --output_dir data/synth            # every file, default sizes
    python -m glmlab.synth --output_dir /tmp/s --n_spo_train 3000 --seed 1

Everything is generated here, deterministically from ``--seed``, in the original project's
sample format (``{"instruction", "input", "output"}``), in Chinese, around one small world: car
repair (parts, faults, the systems parts belong to, the tools that test them).

* **The general corpus** (``general_train.jsonl``) and its **probes** (``general_probe.jsonl``):
  seven skills whose answers are checked by exact match, so that "what the base model knows" and
  "what fine-tuning made it forget" are numbers. Probes are held out: items the corpus does not
  hold (new sequences and programs, or a known fact -- a sum, a part's system or tool, a word's
  English -- asked in a question form the corpus never pairs with that fact). Each probe carries its ``skill``.

  ========== ============================================================ ==============================
  skill      example                                                      held out in the probes
  ========== ============================================================ ==============================
  copy       复述: 水泵、异响、压力表 -> 水泵、异响、压力表 (or 1-3 sentences) new sequences and sentences
  reverse    倒序: 水泵、异响、压力表 -> 压力表、异响、水泵                  new sequences
  sort       排序: 7 3 9 1 -> 1 3 7 9                                      new lists
  arithmetic 3加5等于几？ -> 8                                              a fact asked in a form never paired with it
  knowledge  发动机属于哪个系统？ -> 动力系统; 水泵漏水属于哪类故障？ -> 部件故障  a fact asked in a form never paired with it
  translate  “水泵”的英文是什么？ -> water pump                             a word asked in a form never paired with it
  code       oil_temp = 3 / rpm = 7 -> {'oil_temp': 3, 'rpm': 7}, or back      new programs
  ========== ============================================================ ==============================

  The corpus holds none of the fine-tuning tasks: no triple extraction, no question writing.
  A base model trained on it knows the words and the world, not the tasks.

* **Triple extraction** (``spo_train.jsonl`` / ``spo_test.jsonl``): repair records in the
  original format (``head_关系_tail``, one per line, in the order the facts appear; relations
  部件故障, 性能故障, 组成, 检测工具). The test split (250 records) measures generalisation: every
  test record holds at least one kind of novelty (:func:`novelty`): a (part, fault) or (item,
  problem) pair that no training record holds, a part-fault sentence form (five:
  :data:`TEST_TEMPLATES`) or an opening (four: :data:`TEST_OPENINGS`) that no other file uses.
  :func:`f1_by_novelty` scores each kind apart.
* **Doc-to-question** (``d2q_train.jsonl`` / ``d2q_test.jsonl``): a short document about one
  part; the answer is one question it answers. Training has one sample per (document, question);
  a test sample's ``output`` is the list of every reference question of its document.
* **Validation** (``spo_valid.jsonl``, ``d2q_valid.jsonl``, shaped as the test files): where settings
  are chosen (``benchmarks/sweep_valid.py``), so that the test split is scored for reporting only.
  Its novelty is its own: (part, fault) and (item, problem) pairs, sentence forms and openings that
  neither training, the general corpus nor the test split uses (:data:`VALID_FAULTS`,
  :data:`VALID_TEMPLATES`, :data:`VALID_OPENINGS`, :data:`VALID_DOC_SENTENCES`), and none of the
  test split's. It has its own random stream: the other files are what they were before it existed.
"""

from __future__ import annotations

import functools
import random
import sys
from dataclasses import dataclass
from pathlib import Path

# ============================================================================ the world
# part -> (its system, faults it can have, the tool that tests it, English name)
PARTS: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    "发动机": ("动力系统", ("漏油", "异响", "抖动", "过热", "熄火"), "诊断仪", "engine"),
    "火花塞": ("点火系统", ("积碳", "烧蚀", "不点火", "漏电"), "万用表", "spark plug"),
    "点火线圈": ("点火系统", ("断路", "漏电", "过热"), "万用表", "ignition coil"),
    "水泵": ("冷却系统", ("漏水", "异响", "卡死"), "压力表", "water pump"),
    "节温器": ("冷却系统", ("卡滞", "失灵", "漏水"), "温度计", "thermostat"),
    "冷却风扇": ("冷却系统", ("不转", "异响", "转速过低"), "万用表", "cooling fan"),
    "散热器": ("冷却系统", ("漏水", "堵塞", "变形"), "压力表", "radiator"),
    "燃油泵": ("供油系统", ("不供油", "异响", "压力不足"), "油压表", "fuel pump"),
    "喷油嘴": ("供油系统", ("堵塞", "漏油", "雾化不良"), "油压表", "injector"),
    "节气门": ("进气系统", ("过脏", "卡滞", "积碳"), "诊断仪", "throttle"),
    "空气滤清器": ("进气系统", ("堵塞", "破损"), "目测", "air filter"),
    "氧传感器": ("排气系统", ("损坏", "信号异常", "中毒"), "诊断仪", "oxygen sensor"),
    "三元催化器": ("排气系统", ("堵塞", "老化", "异响"), "背压表", "catalytic converter"),
    "蓄电池": ("电气系统", ("亏电", "鼓包", "漏液"), "万用表", "battery"),
    "发电机": ("电气系统", ("不发电", "异响", "皮带打滑"), "万用表", "alternator"),
    "起动机": ("电气系统", ("不转", "异响", "无力"), "万用表", "starter"),
    "大灯": ("电气系统", ("不亮", "闪烁", "发暗"), "万用表", "headlight"),
    "压缩机": ("空调系统", ("不工作", "卡死", "异响", "漏油"), "压力表", "compressor"),
    "冷凝器": ("空调系统", ("堵塞", "漏气", "变形"), "检漏仪", "condenser"),
    "刹车片": ("制动系统", ("磨损", "异响", "过热"), "卡尺", "brake pad"),
    "刹车盘": ("制动系统", ("磨损", "变形", "过热"), "卡尺", "brake disc"),
    "变速箱": ("传动系统", ("漏油", "异响", "换挡冲击", "过热"), "诊断仪", "gearbox"),
    "离合器": ("传动系统", ("打滑", "异响", "分离不彻底"), "目测", "clutch"),
    "减震器": ("悬挂系统", ("漏油", "异响", "失效"), "目测", "shock absorber"),
    "转向机": ("转向系统", ("漏油", "异响", "卡滞"), "压力表", "steering gear"),
}
# performance item -> what can be wrong with it
PERFORMANCE: dict[str, tuple[str, ...]] = {
    "怠速": ("不稳", "过高", "过低", "抖动"),
    "油耗": ("偏高", "过高", "异常"),
    "水温": ("过高", "偏高", "波动"),
    "加速": ("无力", "迟缓", "顿挫"),
    "制动": ("跑偏", "距离过长", "发软"),
    "空调制冷": ("不足", "效果差", "时好时坏"),
    "方向盘": ("抖动", "跑偏", "沉重"),
    "启动": ("困难", "缓慢", "无反应"),
}
# Chinese -> English, for the translation skill (every part and part fault; no performance problem).
ENGLISH: dict[str, str] = {name: eng for name, (_, _, _, eng) in PARTS.items()}
ENGLISH.update({
    "漏油": "oil leak", "异响": "noise", "抖动": "shaking", "过热": "overheating", "熄火": "stalling",
    "积碳": "carbon", "烧蚀": "erosion", "不点火": "no spark", "漏电": "current leak", "断路": "open circuit",
    "漏水": "water leak", "卡死": "seized", "卡滞": "sticking", "失灵": "failure", "不转": "not turning",
    "转速过低": "low speed", "堵塞": "clogged", "变形": "warped", "不供油": "no fuel", "压力不足": "low pressure",
    "雾化不良": "poor spray", "过脏": "dirty", "破损": "broken", "损坏": "damaged", "信号异常": "bad signal",
    "中毒": "poisoned", "老化": "aged", "亏电": "flat", "鼓包": "swollen", "漏液": "leaking fluid",
    "不发电": "no charge", "皮带打滑": "belt slip", "无力": "weak", "不亮": "not lit", "闪烁": "flickering",
    "发暗": "dim", "不工作": "not working", "漏气": "gas leak", "磨损": "worn", "换挡冲击": "shift shock",
    "打滑": "slipping", "分离不彻底": "drag", "失效": "failed",
})
SYSTEMS = sorted({system for system, _, _, _ in PARTS.values()})
TOOLS = sorted({tool for _, _, tool, _ in PARTS.values()})
DIGITS = "0123456789"
VARIABLES = ("a", "b", "x", "y", "n", "rpm", "volt", "oil_temp", "fan_speed", "fault_code", "part_id", "max_rpm")


# ============================================================================ samples

def word_pool(words: str = "parts") -> list[str]:
    """The words the copy and reverse skills draw from: ``parts`` (parts, their faults and tools: the
    shipped corpus) or ``lexicon`` (those, and the performance items and their problems: every word a
    triple can hold but a system). A word no answer of the corpus holds is one a small base never wrote;
    ``benchmarks/base_variants.py`` measures what writing them does to fine-tuning."""
    if words not in WORD_POOLS:
        raise ValueError(f"words must be one of {', '.join(WORD_POOLS)} (got {words!r})")
    faults = {f for _, faults, _, _ in PARTS.values() for f in faults}
    pool = sorted(PARTS) + sorted(faults) + TOOLS
    if words == "lexicon":  # the same order first, so that the shipped pool's draws are a prefix of the words
        pool += sorted(PERFORMANCE) + sorted({b for bad in PERFORMANCE.values() for b in bad} - faults)
    return pool


WORD_POOLS = ("parts", "lexicon")


def _words(rng: random.Random, low: int, high: int, pool: list[str]) -> list[str]:
    return rng.sample(pool, rng.randint(low, high))


def _world_sentences(rng: random.Random) -> str:
    """One to three sentences about the car-repair world, in the words records and documents use.

    Only the (part, fault) and (item, problem) pairs of the triple-extraction *training* split occur,
    and none of the held-out sentence forms or openings, so copying them teaches nothing about the test records.
    """
    pairs, _, perf, _ = spo_split()
    sentences = []
    for _ in range(rng.randint(1, 3)):
        part, fault = rng.choice(pairs)
        item, bad = rng.choice(perf)
        system, _, tool, _ = PARTS[part]
        kind = rng.choice(("part", "perf", "whole", "tool", "doc"))
        if kind == "doc":
            topic = rng.choice(sorted(_DOC_SENTENCES))
            values = {"p": part, "s": system, "t": tool, "f1": fault, "f2": rng.choice(PARTS[part][1]), "perf": item,
                      "bad": bad}
            sentences.append(rng.choice(_DOC_SENTENCES[topic]).format(**values))
            continue
        template = {"part": PART_TEMPLATES, "perf": PERF_TEMPLATES, "whole": WHOLE_TEMPLATES, "tool": TOOL_TEMPLATES}[kind]
        text = rng.choice(template).format(part=part, fault=fault, item=item, bad=bad, whole=system, tool=tool)
        sentences.append(rng.choice(OPENINGS) + text + "。")
    return "".join(sentences)


def _copy(rng: random.Random, pool: list[str]) -> tuple[str, str]:
    text = "、".join(_words(rng, 2, 5, pool)) if rng.random() < 0.4 else _world_sentences(rng)
    return text, text


def _reverse(rng: random.Random, pool: list[str]) -> tuple[str, str]:
    words = _words(rng, 2, 4, pool)
    return "、".join(words), "、".join(reversed(words))


def _sort(rng: random.Random, pool: list[str] | None = None) -> tuple[str, str]:
    numbers = [rng.choice(DIGITS) for _ in range(rng.randint(3, 6))]
    return " ".join(numbers), " ".join(sorted(numbers))


# Arithmetic: every sum and difference of two digits, asked in three forms; each fact is held
# out in one of them (as the knowledge facts are).
ARITHMETIC_FORMS = ("{a}{op}{b}=", "{a}{word}{b}等于几？", "{a}{word}{b}的结果是多少？")


def arithmetic_items() -> list[tuple[bool, str, str]]:
    """Every ``(held_out, question, answer)`` of the arithmetic skill."""
    items = []
    for a in range(10):
        for b in range(10):
            for op, word, value in (("+", "加", a + b), ("-", "减", a - b)):
                if value < 0:
                    continue
                held = (a * 7 + b * 3 + (op == "-")) % len(ARITHMETIC_FORMS)
                for i, form in enumerate(ARITHMETIC_FORMS):
                    items.append((i == held, form.format(a=a, b=b, op=op, word=word), str(value)))
    return items


# Knowledge: four question forms per relation; each fact is held out in one of them.
KNOWLEDGE_FORMS = {
    "system": ("{p}属于哪个系统？", "{p}是哪个系统的部件？", "哪个系统包含{p}？", "说出{p}所在的系统。"),
    "tool": ("检测{p}用什么工具？", "{p}用什么工具检测？", "哪种工具可以检测{p}？", "说出检测{p}的工具。"),
    # what kind of fault a part's or an item's problem is
    "kind": ("{p}属于哪类故障？", "{p}是哪一类故障？", "{p}算什么故障？"),
    # how two things of the world are related: a part to its system, a tool to a part
    "relation": ("{p}是什么关系？", "{p}之间是什么关系？", "说出{p}的关系。"),
}


def knowledge_items() -> list[tuple[bool, str, str]]:
    """Every ``(held_out, question, answer)`` of the knowledge skill. Each fact -- a part's system or
    tool, the kind of a fault, how two things relate -- is asked in three or four forms and held out
    in one of them, a fixed function of the fact. Faults are only those of the triple-extraction
    training split, so no test-only (part, fault) pair occurs in the corpus."""
    pairs, _, perf, _ = spo_split()
    facts = []
    for part, (system, _, tool, _) in PARTS.items():
        facts += [("system", part, system), ("tool", part, tool),
                  ("relation", f"{part}和{system}", "组成"), ("relation", f"{tool}和{part}", "检测工具")]
    facts += [("kind", part + fault, "部件故障") for part, fault in pairs]
    facts += [("kind", item + bad, "性能故障") for item, bad in perf]
    items = []
    for relation, subject, answer in facts:
        forms = KNOWLEDGE_FORMS[relation]
        held = sum(map(ord, subject + relation)) % len(forms)
        items += [(i == held, form.format(p=subject), answer) for i, form in enumerate(forms)]
    return items


# Translation: every word of the bilingual list, asked in three forms; each held out in one of them.
TRANSLATE_FORMS = ("把“{w}”翻译成英文。", "“{w}”的英文是什么？", "“{w}”用英语怎么说？")


def translate_items() -> list[tuple[bool, str, str]]:
    """Every ``(held_out, question, answer)`` of the translation skill."""
    items = []
    for word, english in sorted(ENGLISH.items()):
        held = sum(map(ord, word)) % len(TRANSLATE_FORMS)
        items += [(i == held, form.format(w=word), english) for i, form in enumerate(TRANSLATE_FORMS)]
    return items


def _code(rng: random.Random, pool: list[str] | None = None) -> tuple[str, str]:
    """Assignments, one per line, written as the Python dict they build, or the other way round."""
    names = rng.sample(VARIABLES, rng.randint(2, 5))
    values = {n: int(rng.choice(DIGITS)) for n in names}
    lines = "\n".join(f"{n} = {v}" for n, v in values.items())
    if rng.random() < 0.5:
        return "把下面的赋值写成一个 Python 字典：\n" + lines, repr(values)
    return "把下面的字典写成赋值语句，每行一个：\n" + repr(values), lines


SKILL_INSTRUCTIONS = {
    "copy": "请原样复述下面的内容：",
    "reverse": "把下面的词语倒序排列：",
    "sort": "把下面的数字从小到大排序：",
    "arithmetic": "",
    "knowledge": "",
    "translate": "",
    "code": "",
}
SKILLS = tuple(SKILL_INSTRUCTIONS)


def general_corpus(n_per_skill: int = 1500, n_probe: int = 40, seed: int = 0,
                   words: str = "parts", extra_words: tuple[str, ...] = ()) -> tuple[list[dict], list[dict]]:
    """The general corpus and its held-out probes: ``(train, probes)``, samples with a ``skill`` field.

    ``n_per_skill`` training samples per skill (the knowledge skill cycles through its facts),
    ``n_probe`` probes per skill, none of which the corpus holds; ``words``: :func:`word_pool`, and
    ``extra_words`` appended to it (``benchmarks/data_variants.py`` replays such a corpus).
    """
    pool = word_pool(words) + list(extra_words)
    rng = random.Random(seed)
    train: list[dict] = []
    probes: list[dict] = []

    def sample(skill: str, text: str, answer: str) -> dict:
        return {"instruction": SKILL_INSTRUCTIONS[skill], "input": text, "output": answer, "skill": skill}

    # Sequence skills: probes first, then training items that are not probes.
    makers = {"copy": _copy, "reverse": _reverse, "sort": _sort, "code": _code}
    for skill, make in makers.items():
        held: set[str] = set()
        while len(held) < n_probe:
            text, answer = make(rng, pool)
            if text not in held:
                held.add(text)
                probes.append(sample(skill, text, answer))
        count = 0
        while count < n_per_skill:
            text, answer = make(rng, pool)
            if text not in held:
                train.append(sample(skill, text, answer))
                count += 1

    # Arithmetic, knowledge and translation: every fact in all but one of its question forms; that one
    # is a probe.
    facts = (("arithmetic", arithmetic_items()), ("knowledge", knowledge_items()), ("translate", translate_items()))
    for skill, items in facts:
        known = [(q, a) for held, q, a in items if not held]
        asked = [(q, a) for held, q, a in items if held]
        probes += [sample(skill, q, a) for q, a in rng.sample(asked, min(n_probe, len(asked)))]
        count = n_per_skill * (2 if skill == "knowledge" else 1)  # the largest set of facts
        train += [sample(skill, *known[i % len(known)]) for i in range(count)]

    rng.shuffle(train)
    return train, probes


# ============================================================================ triple extraction
SPO_INSTRUCTION = (
    '请从下面的汽车维修记录中抽取三元组，关系包括"部件故障"、"性能故障"、"组成"和"检测工具"，'
    '三元组写作"头实体_关系_尾实体"，每行一个。记录：'
)
# How a record says each kind of fact: {part} {fault} {whole} {tool} {item} {bad}.
PART_TEMPLATES = ("{part}{fault}", "{part}出现{fault}", "{part}有{fault}的问题", "发现{part}{fault}")
PERF_TEMPLATES = ("{item}{bad}", "{item}明显{bad}", "{item}有些{bad}")
WHOLE_TEMPLATES = ("{whole}的{part}{fault}", "{whole}中的{part}出现{fault}")
TOOL_TEMPLATES = ("用{tool}检测{part}，{part}{fault}", "用{tool}测量{part}，发现{part}{fault}")
OPENINGS = ("客户反映", "故障现象：", "接车后发现", "车主称", "试车时", "据司机描述，")
CHECKS = ("经检查", "拆检发现", "进一步检查", "随后发现", "同时")
QUIET = (
    "车辆进站做常规保养，更换机油和机滤。",
    "客户要求检查轮胎气压，检查后一切正常。",
    "例行保养，检查各部位均无异常。",
    "更换雨刮片，试车正常，交车。",
    "车辆首保，检查灯光和底盘，未见异常。",
)


def _spo_fact(rng: random.Random, pairs: list[tuple[str, str]], perf: list[tuple[str, str]],
              held_template: bool, held_form: str,
              part_templates: tuple[str, ...] = PART_TEMPLATES) -> tuple[str, list[str]]:
    """One clause of a record and the triples it states, drawing (part, fault) pairs from ``pairs``;
    ``held_template``: the part fault said in ``held_form``, a form training never uses."""
    kind = rng.choice(("part", "part", "perf", "whole", "tool"))
    if kind == "perf":
        item, bad = rng.choice(perf)
        return rng.choice(PERF_TEMPLATES).format(item=item, bad=bad), [f"{item}_性能故障_{bad}"]
    part, fault = rng.choice(pairs)
    whole, _, tool, _ = PARTS[part]
    if held_template:
        return held_form.format(part=part, fault=fault), [f"{part}_部件故障_{fault}"]
    if kind == "whole":
        text = rng.choice(WHOLE_TEMPLATES).format(whole=whole, part=part, fault=fault)
        return text, [f"{part}_组成_{whole}", f"{part}_部件故障_{fault}"]
    if kind == "tool":
        text = rng.choice(TOOL_TEMPLATES).format(tool=tool, part=part, fault=fault)
        return text, [f"{part}_检测工具_{tool}", f"{part}_部件故障_{fault}"]
    return rng.choice(part_templates).format(part=part, fault=fault), [f"{part}_部件故障_{fault}"]


def _spo_record(rng: random.Random, pairs, perf, *, held_template: float = 0.0, quiet: float = 0.0,
                held_form: str = "", openings: tuple[str, ...] = OPENINGS,
                part_templates: tuple[str, ...] = PART_TEMPLATES) -> dict:
    if rng.random() < quiet:
        return {"instruction": SPO_INSTRUCTION, "input": rng.choice(QUIET), "output": ""}
    clauses, triples = [], []
    for i in range(rng.choice((1, 2, 2, 3))):
        text, spo = _spo_fact(rng, pairs, perf, rng.random() < held_template, held_form, part_templates)
        if any(t in triples for t in spo):
            continue
        clauses.append((rng.choice(openings) if i == 0 else rng.choice(CHECKS)) + text)
        triples += spo
    return {"instruction": SPO_INSTRUCTION, "input": "，".join(clauses) + "。", "output": "\n".join(triples)}


def spo_split(seed: int = 0, test_share: float = 0.2) -> tuple[list, list, list, list]:
    """(train part/fault pairs, test-only pairs, train item/problem pairs, test-only ones)."""
    rng = random.Random(seed)
    pairs = sorted((p, f) for p in PARTS for f in PARTS[p][1])
    perf = sorted((i, b) for i in PERFORMANCE for b in PERFORMANCE[i])
    rng.shuffle(pairs)
    rng.shuffle(perf)
    k, j = int(len(pairs) * test_share), int(len(perf) * test_share)
    return pairs[k:], pairs[:k], perf[j:], perf[:j]


def spo_data(n_train: int = 2000, n_test: int = 250, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Triple-extraction records: ``(train, test)``; every test record needs generalisation.

    A test record mixes test-only and training pairs and holds at least one kind of novelty
    (:func:`novelty`): a test-only pair, a test-only part-fault form (:data:`TEST_TEMPLATES`) or a
    test-only opening (:data:`TEST_OPENINGS`); it is never a training record's text. The test records
    have their own random stream, so the training records do not depend on ``n_test``.
    """
    train_pairs, test_pairs, train_perf, test_perf = spo_split(seed)
    train = spo_train_records(n_train, seed)
    seen = {r["input"] for r in train}
    rng = random.Random(seed + 5)
    test: list[dict] = []
    while len(test) < n_test:
        openings = TEST_OPENINGS if rng.random() < TEST_OPENING_SHARE else OPENINGS
        record = _spo_record(rng, train_pairs + test_pairs, train_perf + test_perf, held_template=TEST_FORM_SHARE,
                             held_form=rng.choice(TEST_TEMPLATES), openings=openings)
        if novelty(record, "test", seed) and record["input"] not in seen:
            seen.add(record["input"])
            test.append(record)
    return train, test


def spo_train_records(n_train: int = 2000, seed: int = 0, *, extra_pairs: list[tuple[str, str]] | tuple = (),
                      part_templates: tuple[str, ...] = PART_TEMPLATES,
                      held_words: frozenset[str] | set[str] = frozenset()) -> list[dict]:
    """The training records of :func:`spo_data` (its ``train``, with the defaults). ``extra_pairs`` (part,
    fault) pairs joined to the training pairs and other ``part_templates`` make the variants of the
    training data that ``benchmarks/data_variants.py`` measures on validation (the same random stream);
    ``held_words`` leaves out every pair whose fault or problem is one of them, so that no answer writes
    those words (``benchmarks/held_words.py``)."""
    train_pairs, _, train_perf, _ = spo_split(seed)
    train_pairs = [(p, f) for p, f in train_pairs if f not in held_words]
    train_perf = [(i, b) for i, b in train_perf if b not in held_words]
    rng = random.Random(seed + 1)
    return [_spo_record(rng, train_pairs + list(extra_pairs), train_perf, quiet=0.05, part_templates=part_templates)
            for _ in range(n_train)]


# ============================================================================ the test split's novelty
# Ways of saying a part fault, and openings, that only test records use: neither training, the general
# corpus nor validation ever does (each form's words between its slots are its marker: "存在", ...).
TEST_TEMPLATES = ("{part}存在{fault}现象", "{part}表现为{fault}", "{part}被查出{fault}", "{part}产生了{fault}",
                  "{part}经常{fault}")
TEST_OPENINGS = ("检修时", "根据维修单，", "据用户说，", "进站检查：")
TEST_FORM_SHARE = 0.4      # of a test record's part-fault clauses, said in a test-only form
TEST_OPENING_SHARE = 1 / 3  # of test records, opening with a test-only opening
NOVELTY_KINDS = ("pair", "word", "form", "opening")


@functools.lru_cache(maxsize=8)
def _new_pairs(split: str, seed: int) -> frozenset[str]:
    """The triples only ``split``'s records state (its own part-fault and item-problem pairs)."""
    if split == "test":
        _, parts, _, perf = spo_split(seed)
    elif split == "valid":
        parts, perf = valid_pairs()
    else:
        raise ValueError(f"novelty: split must be 'test' or 'valid' (got {split!r})")
    return frozenset({f"{p}_部件故障_{f}" for p, f in parts} | {f"{i}_性能故障_{b}" for i, b in perf})


@functools.lru_cache(maxsize=8)
def _untrained_words(seed: int) -> frozenset[str]:
    """Faults and problems no training pair has: a record stating one asks for a word training never outputs."""
    train_pairs, test_pairs, train_perf, test_perf = spo_split(seed)
    trained = {f for _, f in train_pairs} | {b for _, b in train_perf}
    extra_pairs, extra_perf = valid_pairs()
    return frozenset({w for _, w in test_pairs + test_perf + extra_pairs + extra_perf} - trained)


def novelty(record: dict, split: str = "test", seed: int = 0, forms: tuple[str, ...] | None = None,
            openings: tuple[str, ...] | None = None) -> set[str]:
    """The kinds of novelty a ``split`` ('test' or 'valid') record holds, a subset of :data:`NOVELTY_KINDS`:
    ``pair``: it states a pair only that split states; ``word``: one of those pairs' fault or problem word is
    in no training pair (the model must copy a word it never wrote; a fifth of the world's pairs are the test
    split's, drawn at random, and ten of their words belong to no other pair); ``form``: it says a part fault
    in a form only that split uses; ``opening``: it opens with an opening only that split uses. ``forms`` and
    ``openings`` replace the split's own (a split built with others: ``benchmarks/wide_valid.py``)."""
    own_forms, own_openings = (TEST_TEMPLATES, TEST_OPENINGS) if split == "test" else (VALID_TEMPLATES, VALID_OPENINGS)
    forms, openings = forms or own_forms, openings or own_openings
    kinds = set()
    new = set(record["output"].split("\n")) & _new_pairs(split, seed)
    if new:
        kinds.add("pair")
    if {t.rsplit("_", 1)[-1] for t in new} & _untrained_words(seed):
        kinds.add("word")
    if any(_form_marker(f) in record["input"] for f in forms):
        kinds.add("form")
    if record["input"].startswith(openings):
        kinds.add("opening")
    return kinds


def f1_by_novelty(samples: list[dict], predictions: list[str], split: str = "test", seed: int = 0) -> dict[str, dict]:
    """Triple F1 on the ``split`` records of each kind of novelty (a record may be of several kinds), plus
    ``familiar_wording``: records with neither a new form nor a new opening. kind -> {"f1", "n"} (records)."""
    from glmlab.metrics import triple_f1

    kinds = [novelty(s, split, seed) for s in samples]
    groups = {kind: [i for i, k in enumerate(kinds) if kind in k] for kind in NOVELTY_KINDS}
    groups["familiar_wording"] = [i for i, k in enumerate(kinds) if not k & {"form", "opening"}]
    return {kind: {"f1": triple_f1([predictions[i] for i in rows], [samples[i]["output"] for i in rows]).f1,
                   "n": len(rows)} for kind, rows in groups.items() if rows}


# ============================================================================ the validation split
# Settings (learning rates, the step budget, the base) are chosen on a validation split, never on the
# test split. It needs generalisation of its own kind, disjoint from both others: pairs and sentence
# forms that neither training, the general corpus, nor the test split ever uses. Validation is written
# with its own random stream, so adding it left every other file byte for byte as it was.
#
# More faults the world's parts can have, and more problems its performance items can show: words the
# world already knows, in (part, fault) and (item, problem) pairs that only the validation split states.
VALID_FAULTS: dict[str, tuple[str, ...]] = {
    "发动机": ("积碳",), "火花塞": ("老化",), "水泵": ("卡滞",), "散热器": ("老化",), "喷油嘴": ("损坏",),
    "节气门": ("损坏",), "蓄电池": ("过热",), "发电机": ("过热",), "起动机": ("卡死",), "大灯": ("损坏",),
    "冷凝器": ("老化",), "刹车盘": ("异响",), "离合器": ("过热",), "减震器": ("变形",),
}
VALID_PROBLEMS: dict[str, tuple[str, ...]] = {
    "怠速": ("偏高",), "油耗": ("波动",), "水温": ("异常",), "加速": ("抖动",), "启动": ("迟缓",),
}
# Ways of saying a part fault that only validation records use (the test split has its own).
VALID_TEMPLATES = ("{part}发生{fault}", "{part}出了{fault}的故障")
# Openings only validation records use (a third of them open with one; the rest with training's).
VALID_OPENINGS = ("维修记录：", "路试时", "据车主反映，")
VALID_OPENING_SHARE = 1 / 3


def valid_pairs() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The validation-only ``(part, fault)`` and ``(item, problem)`` pairs, sorted."""
    parts = sorted((part, fault) for part, faults in VALID_FAULTS.items() for fault in faults)
    perf = sorted((item, bad) for item, problems in VALID_PROBLEMS.items() for bad in problems)
    return parts, perf


def spo_valid(n_valid: int = 60, seed: int = 0, exclude: set[str] | frozenset[str] = frozenset()) -> list[dict]:
    """Triple-extraction validation records, each needing generalisation of validation's own kind.

    A record mixes training pairs with validation-only ones (:func:`valid_pairs`) and holds at least
    one validation-only pair, part-fault form (:data:`VALID_TEMPLATES`) or opening
    (:data:`VALID_OPENINGS`); none of those occurs in training, test or the general corpus, and no
    test-only pair or test form occurs here. Inputs in ``exclude`` (the other splits') are skipped.
    """
    train_pairs, _, train_perf, _ = spo_split(seed)
    extra_pairs, extra_perf = valid_pairs()
    rng = random.Random(seed + 3)
    valid: list[dict] = []
    seen = set(exclude)
    while len(valid) < n_valid:
        form = rng.choice(VALID_TEMPLATES)
        openings = VALID_OPENINGS if rng.random() < VALID_OPENING_SHARE else OPENINGS
        record = _spo_record(rng, train_pairs + extra_pairs, train_perf + extra_perf, held_template=0.25,
                             held_form=form, openings=openings)
        if novelty(record, "valid", seed) and record["input"] not in seen:
            seen.add(record["input"])
            valid.append(record)
    return valid


def _form_marker(form: str) -> str:
    """The words of a sentence form between its slots ("{part}发生{fault}" -> "发生")."""
    return form.split("}", 1)[1].split("{", 1)[0]


# ============================================================================ doc-to-question
D2Q_INSTRUCTION = "根据下面的文档，提出一个文档能回答的问题。文档："
_DOC_SENTENCES = {
    "system": ("{p}是{s}的重要部件。", "{p}属于{s}。"),
    "faults": ("{p}常见的故障有{f1}和{f2}。", "{p}容易出现{f1}，也可能{f2}。"),
    "tool": ("维修时一般用{t}检测{p}。", "检测{p}通常需要{t}。"),
    "symptom": ("{p}{f1}时，车辆可能出现{perf}{bad}。", "如果{p}{f1}，常会导致{perf}{bad}。"),
}
_QUESTIONS = {
    "system": "{p}属于哪个系统？",
    "faults": "{p}常见的故障有哪些？",
    "tool": "用什么工具检测{p}？",
    "symptom": "{p}{f1}会导致什么问题？",
}


def d2q_data(n_train_docs: int = 300, n_test_docs: int = 30, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Doc-to-question samples: ``(train, test)``. A training document gives one sample per question;
    a test document gives one sample whose ``output`` lists every reference question."""
    rng = random.Random(seed + 2)

    def document() -> tuple[str, list[str]]:
        part = rng.choice(sorted(PARTS))
        system, faults, tool, _ = PARTS[part]
        f1, f2 = rng.sample(faults, 2)
        perf = rng.choice(sorted(PERFORMANCE))
        values = {"p": part, "s": system, "t": tool, "f1": f1, "f2": f2, "perf": perf, "bad": rng.choice(PERFORMANCE[perf])}
        topics = rng.sample(sorted(_DOC_SENTENCES), rng.randint(2, 4))
        text = "".join(rng.choice(_DOC_SENTENCES[t]).format(**values) for t in topics)
        return text, [_QUESTIONS[t].format(**values) for t in topics]

    train, test, seen = [], [], set()
    while len(seen) < n_train_docs:
        text, questions = document()
        if text not in seen:
            seen.add(text)
            train += [{"instruction": D2Q_INSTRUCTION, "input": text, "output": q} for q in questions]
    while len(test) < n_test_docs:
        text, questions = document()
        if text not in seen:
            seen.add(text)
            test.append({"instruction": D2Q_INSTRUCTION, "input": text, "output": questions})
    rng.shuffle(train)
    return train, test


# Document sentences only validation documents use: one more form per topic.
VALID_DOC_SENTENCES = {
    "system": "{p}是{s}里的部件。",
    "faults": "{p}的常见故障是{f1}和{f2}。",
    "tool": "检测{p}要用{t}。",
    "symptom": "{p}{f1}，{perf}会变得{bad}。",
}
VALID_DOC_MARKERS = ("里的部件", "的常见故障是", "要用", "会变得")  # words no other document holds


def d2q_valid(n_docs: int = 30, seed: int = 0, exclude: set[str] | frozenset[str] = frozenset()) -> list[dict]:
    """Doc-to-question validation samples, shaped as the test ones (``output``: every reference question).

    Each document says at least one thing in a validation-only form (:data:`VALID_DOC_SENTENCES`; each
    sentence is in it with even odds) or names a validation-only fault of its part
    (:data:`VALID_FAULTS`); documents in ``exclude`` (the other splits') are skipped.
    """
    rng = random.Random(seed + 4)
    valid: list[dict] = []
    seen = set(exclude)
    while len(valid) < n_docs:
        part = rng.choice(sorted(PARTS))
        system, faults, tool, _ = PARTS[part]
        f1, f2 = rng.sample(faults + VALID_FAULTS.get(part, ()), 2)
        perf = rng.choice(sorted(PERFORMANCE))
        values = {"p": part, "s": system, "t": tool, "f1": f1, "f2": f2, "perf": perf, "bad": rng.choice(PERFORMANCE[perf])}
        topics = rng.sample(sorted(_DOC_SENTENCES), rng.randint(2, 4))
        forms = [VALID_DOC_SENTENCES[t] if rng.random() < 0.5 else rng.choice(_DOC_SENTENCES[t]) for t in topics]
        text = "".join(form.format(**values) for form in forms)
        said = {"faults": {f1, f2}, "symptom": {f1}}
        new_fault = any(f not in faults for t in topics for f in said.get(t, ()))
        if (new_fault or any(f in VALID_DOC_SENTENCES.values() for f in forms)) and text not in seen:
            seen.add(text)
            valid.append({"instruction": D2Q_INSTRUCTION, "input": text,
                          "output": [_QUESTIONS[t].format(**values) for t in topics]})
    return valid


# ============================================================================ files
@dataclass(frozen=True)
class Sizes:
    """How much of each file :func:`write_all` writes (the defaults are what the notebooks use)."""

    n_general: int = 1500  # per skill
    n_probe: int = 40  # per skill
    n_spo_train: int = 2000
    n_spo_test: int = 250
    n_d2q_docs: int = 300
    n_d2q_test: int = 30
    n_spo_valid: int = 60
    n_d2q_valid: int = 30


def write_all(output_dir: str | Path, sizes: Sizes = Sizes(), seed: int = 0) -> dict[str, Path]:
    """Write every data set into ``output_dir``; returns name -> path."""
    from glmlab.json_files import write_jsonl  # the project's one JSON-lines writer (atomic)

    out = Path(output_dir)
    general, probes = general_corpus(sizes.n_general, sizes.n_probe, seed)
    spo_train, spo_test = spo_data(sizes.n_spo_train, sizes.n_spo_test, seed)
    d2q_train, d2q_test = d2q_data(sizes.n_d2q_docs, sizes.n_d2q_test, seed)
    spo_val = spo_valid(sizes.n_spo_valid, seed, exclude={r["input"] for r in spo_train + spo_test})
    d2q_val = d2q_valid(sizes.n_d2q_valid, seed, exclude={r["input"] for r in d2q_train + d2q_test})
    files = {"general_train": general, "general_probe": probes, "spo_train": spo_train, "spo_test": spo_test,
             "d2q_train": d2q_train, "d2q_test": d2q_test, "spo_valid": spo_val, "d2q_valid": d2q_val}
    paths = {}
    for name, rows in files.items():
        paths[name] = out / f"{name}.jsonl"
        write_jsonl(paths[name], rows)
    return paths


RELATIONS = ("部件故障", "性能故障", "组成", "检测工具")


def world_words() -> list[str]:
    """Every word of the car-repair world (parts, faults, systems, tools, performance items and
    problems, the four relations), longest first. The tiny vocabularies never merge across a word's
    edge, as a real tokenizer trained on broad text does not: a piece such as "节气门积碳" would hide
    from a small model the very span it has to copy."""
    words = set(PARTS) | set(SYSTEMS) | set(TOOLS) | set(PERFORMANCE) | set(RELATIONS)
    words |= {f for _, faults, _, _ in PARTS.values() for f in faults}
    words |= {b for problems in PERFORMANCE.values() for b in problems}
    return sorted(words, key=lambda w: (-len(w), w))


def _vocabulary_spo_sample(seed: int) -> tuple[list[dict], list[dict]]:
    """The triple-extraction records the vocabularies were trained on: 300 training records and 10 of
    the first test split (60 records, one held-out form), kept as they were so that the tiny tokenizers
    and every figure and fixture measured with them stay the same; the test forms and openings added
    since use only characters these records already hold (``tests/test_synth.py`` checks it)."""
    train_pairs, test_pairs, train_perf, test_perf = spo_split(seed)
    rng = random.Random(seed + 1)
    train = [_spo_record(rng, train_pairs, train_perf, quiet=0.05) for _ in range(300)]
    seen, test = {r["input"] for r in train}, []
    new = {f"{p}_部件故障_{f}" for p, f in test_pairs} | {f"{i}_性能故障_{b}" for i, b in test_perf}
    while len(test) < 10:
        record = _spo_record(rng, train_pairs + test_pairs, train_perf + test_perf, held_template=0.25,
                             held_form=TEST_TEMPLATES[0])
        if (set(record["output"].split("\n")) & new or "存在" in record["input"]) and record["input"] not in seen:
            seen.add(record["input"])
            test.append(record)
    return train, test


def tokenizer_text(seed: int = 0) -> list[str]:
    """Text the tiny SentencePiece vocabularies are trained on, besides ``assets/tiny_corpus.txt``:
    a sample of every generated file, so that every character of the project's data (``_``, digits,
    Latin letters, newlines and spaces included) has a piece."""
    general, probes = general_corpus(300, 10, seed)
    spo_train, spo_test = _vocabulary_spo_sample(seed)
    d2q_train, d2q_test = d2q_data(60, 5, seed)
    import string

    lines = [string.ascii_letters, string.digits, string.punctuation]  # every printable ASCII character
    for row in general + probes + spo_train + spo_test + d2q_train + d2q_test:
        output = row["output"] if isinstance(row["output"], str) else "".join(row["output"])
        lines.append(row["instruction"] + row["input"] + output)
    for name in ("spo_train", "spo_test", "chat3_train", "tools3_train"):  # the readable samples in data/
        path = Path(__file__).resolve().parent.parent / "data" / f"{name}.jsonl"
        if path.is_file():
            lines += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines


def main(argv: list[str] | None = None) -> int:
    from glmlab.parsers import OneLineParser

    parser = OneLineParser(prog="python -m glmlab.synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True, help="folder to write the .jsonl files into")
    parser.add_argument("--seed", type=int, default=0, help="everything is a function of this seed")
    defaults = Sizes()
    for name in Sizes.__dataclass_fields__:
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name), help=f"default {getattr(defaults, name)}")
    args = vars(parser.parse_args(argv))
    output_dir, seed = args.pop("output_dir"), args.pop("seed")
    bad = [name for name, value in args.items() if value < 1]
    if bad:
        parser.error(f"--{bad[0]} must be at least 1")
    for name, path in write_all(output_dir, Sizes(**args), seed).items():
        print(f"{path}: {sum(1 for _ in path.open(encoding='utf-8'))} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
