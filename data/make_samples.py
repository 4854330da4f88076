"""Write glmlab's small synthetic sample data (deterministic: fixed seed, no downloads).

    python data/make_samples.py            # writes data/spo_train.jsonl, spo_test.jsonl, chat3_train.jsonl,
                                           # tools3_train.jsonl and data/synth/ (small readable samples of
                                           # glmlab.synth's sets)

* ``spo_{train,test}.jsonl``: car repair records in the style of the original
  ChatGLM-Finetuning triple-extraction task. Each record mentions a few facts;
  the output lists one ``head_关系_tail`` triple per line, in the order the facts
  appear, with the relations 部件故障 (part fault), 性能故障 (performance
  fault), 组成 (part_组成_whole) and 检测工具 (part_检测工具_tool). A few records
  state no fault and have an empty output, as real data does.
* ``chat3_train.jsonl``: short ChatGLM3 multi-turn conversations
  (``{"conversations": [{"role", "content"}, ...]}``) about the same faults.
* ``tools3_train.jsonl``: ChatGLM3 conversations with tools, in the official fine-tuning
  demo's format: a workshop assistant that may call ``query_part_price`` (a part's price)
  and ``lookup_fault_code`` (what an OBD fault code means and which part to check). A tool
  call is an assistant turn whose ``metadata`` is the tool's name and whose content is
  ``tool_call(...)`` in a python block; the tool's answer is an ``observation`` turn. Half
  the samples give the tool list at the top (``{"tools": [...], "conversations": [...]}``),
  half on their system message; some questions need no tool, one needs two calls.

* ``synth/*.jsonl``: a few samples of each data set ``glmlab.synth`` writes (the general corpus and
  its probes, triple extraction, doc-to-question), to read; the notebooks generate the full sets
  (``python -m glmlab.synth``).

Inputs stay under 60 characters so tiny CPU training runs are quick.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 20240601
HERE = Path(__file__).parent

INSTRUCTION = (
    '请从下面的汽车维修记录中抽取三元组，关系包括"部件故障"、"性能故障"、"组成"和"检测工具"，'
    '三元组写作"头实体_关系_尾实体"，每行一个。记录：'
)

# part -> faults that make sense for it
PART_FAULTS = {
    "发动机": ["漏油", "有异响", "抖动", "过热"],
    "火花塞": ["积碳", "烧蚀", "不点火"],
    "水泵": ["漏水", "有异响"],
    "蓄电池": ["亏电", "鼓包"],
    "发电机": ["不发电", "皮带打滑"],
    "刹车片": ["磨损严重", "有异响"],
    "大灯": ["不亮", "闪烁"],
    "压缩机": ["不工作", "卡死"],
    "节气门": ["过脏", "卡滞"],
    "燃油泵": ["不供油", "有异响"],
    "冷却风扇": ["不转", "转速过低"],
    "氧传感器": ["损坏", "信号异常"],
}
# performance item -> what is wrong with it
PERFORMANCE = {
    "怠速": ["不稳", "过高", "过低"],
    "油耗": ["偏高", "过高"],
    "水温": ["过高", "偏高"],
    "加速": ["无力", "迟缓"],
    "制动": ["跑偏", "距离过长"],
    "空调制冷": ["不足", "效果差"],
}
# part -> the assembly it belongs to (part_组成_whole)
WHOLE_OF = {
    "火花塞": "点火系统",
    "水泵": "冷却系统",
    "冷却风扇": "冷却系统",
    "燃油泵": "供油系统",
    "压缩机": "空调系统",
    "刹车片": "制动系统",
    "节气门": "进气系统",
}
# tool -> parts it is used on (part_检测工具_tool)
TOOLS = {
    "万用表": ["蓄电池", "发电机", "大灯", "氧传感器"],
    "诊断仪": ["发动机", "节气门", "氧传感器"],
    "油压表": ["燃油泵"],
    "压力表": ["压缩机", "水泵"],
}

OPENINGS = ["客户反映", "故障现象：", "接车后发现", "车主称", "试车时"]
CHECKS = ["经检查", "拆检发现", "进一步检查"]
QUIET = [
    "车辆进站做常规保养，更换机油和机滤。",
    "客户要求检查轮胎气压，检查后一切正常。",
    "例行保养，检查各部位均无异常。",
    "更换雨刮片，试车正常，交车。",
]


def _fact(rng: random.Random) -> tuple[str, list[str]]:
    """One clause of a record and the triples it states."""
    kind = rng.choice(["part", "part", "perf", "whole", "tool"])
    if kind == "perf":
        item = rng.choice(sorted(PERFORMANCE))
        bad = rng.choice(PERFORMANCE[item])
        return f"{item}{bad}", [f"{item}_性能故障_{bad}"]
    if kind == "whole":
        part = rng.choice(sorted(WHOLE_OF))
        whole, fault = WHOLE_OF[part], rng.choice(PART_FAULTS[part])
        return f"{whole}的{part}{fault}", [f"{part}_组成_{whole}", f"{part}_部件故障_{fault}"]
    if kind == "tool":
        tool = rng.choice(sorted(TOOLS))
        part = rng.choice(TOOLS[tool])
        fault = rng.choice(PART_FAULTS[part])
        return f"用{tool}检测{part}，{part}{fault}", [f"{part}_检测工具_{tool}", f"{part}_部件故障_{fault}"]
    part = rng.choice(sorted(PART_FAULTS))
    fault = rng.choice(PART_FAULTS[part])
    return f"{part}{fault}", [f"{part}_部件故障_{fault}"]


def make_record(rng: random.Random, allow_empty: bool = True) -> dict:
    """One synthetic repair record as an instruction sample."""
    if allow_empty and rng.random() < 0.07:
        return {"instruction": INSTRUCTION, "input": rng.choice(QUIET), "output": ""}
    clauses, triples = [], []
    for i in range(rng.choice([1, 1, 2, 2, 3])):
        text, spo = _fact(rng)
        if any(t in triples for t in spo):
            continue
        prefix = rng.choice(OPENINGS) if i == 0 else rng.choice(CHECKS)
        clauses.append(prefix + text)
        triples += spo
    text = "，".join(clauses) + "。"
    assert len(text) < 60, text
    return {"instruction": INSTRUCTION, "input": text, "output": "\n".join(triples)}


SYSTEM = "你是一名经验丰富的汽车维修技师，回答简洁准确。"
ADVICE = {
    "漏油": "检查油封和垫片，必要时更换",
    "有异响": "先定位异响位置，再检查轴承和紧固件",
    "不亮": "检查灯泡、保险丝和线路",
    "亏电": "检查是否有漏电，并给蓄电池充电或更换",
    "过热": "检查冷却液液位、水泵和冷却风扇",
    "不工作": "检查供电、保险丝和控制信号",
    "积碳": "清洗或更换，并检查燃烧状况",
    "不发电": "检查发电机皮带和电压调节器",
}


def make_conversation(rng: random.Random) -> dict:
    """A short system/user/assistant conversation about one fault, sometimes with a follow-up."""
    candidates = [(p, f) for p, fs in PART_FAULTS.items() for f in fs if f in ADVICE]
    part, fault = rng.choice(sorted(candidates))
    conv = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"我的车{part}{fault}，该怎么办？"},
        {"role": "assistant", "content": f"{part}{fault}时，建议{ADVICE[fault]}。"},
    ]
    if rng.random() < 0.7:
        tool = next((t for t, parts in TOOLS.items() if part in parts), "诊断仪")
        conv += [
            {"role": "user", "content": "需要用什么工具检测？"},
            {"role": "assistant", "content": f"可以用{tool}检测{part}。"},
        ]
    if rng.random() < 0.3:
        conv = conv[1:]  # some conversations have no system message
    return {"conversations": conv}


TOOL_SPECS = [
    {
        "name": "query_part_price",
        "description": "查询配件的价格（元）",
        "parameters": {"type": "object", "properties": {"part": {"type": "string", "description": "配件名称"}},
                       "required": ["part"]},
    },
    {
        "name": "lookup_fault_code",
        "description": "查询故障码的含义和要检查的配件",
        "parameters": {"type": "object", "properties": {"code": {"type": "string", "description": "故障码，如P0300"}},
                       "required": ["code"]},
    },
]
PART_PRICE = {"火花塞": 45, "刹车片": 260, "蓄电池": 480, "水泵": 350, "氧传感器": 320, "燃油泵": 700, "节气门": 900}
# fault code -> (meaning, the part to check first)
FAULT_CODES = {
    "P0300": ("随机多缸失火", "火花塞"),
    "P0171": ("混合气过稀", "氧传感器"),
    "P0562": ("系统电压过低", "蓄电池"),
    "P0230": ("燃油泵电路故障", "燃油泵"),
    "P0507": ("怠速过高", "节气门"),
}
TOOL_SYSTEM = "你是汽修店的助手，可以调用工具查询配件价格和故障码。"


def _call(tool: str, key: str, value: str, answer: dict) -> list[dict]:
    """An assistant tool call and the tool's observation."""
    code = f"```python\ntool_call({key}={value!r})\n```"
    return [{"role": "assistant", "metadata": tool, "content": code},
            {"role": "observation", "content": json.dumps(answer, ensure_ascii=False)}]


def make_tool_conversation(rng: random.Random, kind: str, top_level_tools: bool) -> dict:
    """A conversation with tools: ``kind`` is ``price``, ``code``, ``code_then_price`` or ``advice`` (no tool)."""
    conv: list[dict] = []
    if kind == "price":
        part = rng.choice(sorted(PART_PRICE))
        conv.append({"role": "user", "content": f"换一个{part}多少钱？"})
        conv += _call("query_part_price", "part", part, {"part": part, "price": PART_PRICE[part]})
        conv.append({"role": "assistant", "content": f"{part}的价格是{PART_PRICE[part]}元。"})
    elif kind in ("code", "code_then_price"):
        code = rng.choice(sorted(FAULT_CODES))
        meaning, part = FAULT_CODES[code]
        conv.append({"role": "user", "content": f"仪表报故障码{code}，是什么意思？"})
        conv += _call("lookup_fault_code", "code", code, {"code": code, "meaning": meaning, "check": part})
        conv.append({"role": "assistant", "content": f"{code}表示{meaning}，建议先检查{part}。"})
        if kind == "code_then_price":
            conv.append({"role": "user", "content": f"如果要换{part}，要多少钱？"})
            conv += _call("query_part_price", "part", part, {"part": part, "price": PART_PRICE[part]})
            conv.append({"role": "assistant", "content": f"{part}的价格是{PART_PRICE[part]}元。"})
    else:
        part, fault = rng.choice(sorted((p, f) for p, fs in PART_FAULTS.items() for f in fs if f in ADVICE))
        conv.append({"role": "user", "content": f"我的车{part}{fault}，该怎么办？"})
        conv.append({"role": "assistant", "content": f"{part}{fault}时，建议{ADVICE[fault]}。"})
    if top_level_tools:  # the demo's form: the tool list beside the conversation
        return {"tools": TOOL_SPECS, "conversations": conv}
    return {"conversations": [{"role": "system", "content": TOOL_SYSTEM, "tools": TOOL_SPECS}] + conv}


def make_tool_conversations(rng: random.Random) -> list[dict]:
    """Eight conversations with tools, every kind twice, the two ways of giving the tool list alternating."""
    kinds = ["price", "code", "code_then_price", "advice"] * 2
    return [make_tool_conversation(rng, kind, top_level_tools=i % 2 == 0) for i, kind in enumerate(kinds)]


def _write(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(out_dir: Path = HERE) -> None:
    rng = random.Random(SEED)
    train = [make_record(rng) for _ in range(60)]
    # The test set: records with at least one triple, none of them seen in training.
    seen, test = {r["input"] for r in train}, []
    while len(test) < 15:
        r = make_record(rng, allow_empty=False)
        if r["input"] not in seen:
            seen.add(r["input"])
            test.append(r)
    _write(out_dir / "spo_train.jsonl", train)
    _write(out_dir / "spo_test.jsonl", test)
    _write(out_dir / "chat3_train.jsonl", [make_conversation(rng) for _ in range(10)])
    _write(out_dir / "tools3_train.jsonl", make_tool_conversations(random.Random(SEED + 3)))

    from glmlab.synth import Sizes, write_all

    write_all(out_dir / "synth", Sizes(n_general=3, n_probe=2, n_spo_train=12, n_spo_test=6, n_d2q_docs=4,
                                       n_d2q_test=3, n_spo_valid=6, n_d2q_valid=3))


if __name__ == "__main__":
    main()
