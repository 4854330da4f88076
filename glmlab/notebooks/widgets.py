"""A notebook chat box: ask once, read every model's answer side by side, each streamed as it grows.

    from glmlab.notebooks.widgets import chat_box
    chat_box({"base": load_for_inference(base_dir), "lora": load_for_inference(lora_checkpoint)},
             example="抽取三元组：故障现象：制动距离过长。")

Each model keeps its own history (:func:`glmlab.chat.stream_chat`, the official chat format of its
generation); ``clear`` forgets them all. The box answers ``example`` with every model before it is
shown, so where no widget can be shown the text still says what each model answered: without
ipywidgets, outside a Jupyter kernel, or in a notebook run with no browser attached (papermill
stores the text next to the widget). ``print(box)`` gives the same text anywhere.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping

from glmlab.chat import chat_mode, stream_chat

# Short, greedy answers unless the caller asks otherwise: the box compares models, reproducibly.
DEFAULT_GENERATION = {"max_new_tokens": 128, "do_sample": False}


def _text(response) -> str:
    """A response as text: ChatGLM3 tool calls (dicts) as JSON."""
    return response if isinstance(response, str) else json.dumps(response, ensure_ascii=False)


def _in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (where a widget can be displayed at all)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class ChatBox:
    """The state behind :func:`chat_box`: the models, their histories and the transcript.

    :meth:`send` asks every model (streaming into the widget when one is shown), :meth:`clear`
    starts over, :meth:`transcript` is the conversation as text.
    """

    def __init__(self, models: Mapping[str, tuple], example: str | None = None, **gen_kwargs):
        if not models:
            raise ValueError("chat_box needs at least one model: {name: (model, tokenizer)}")
        self.models = {}
        for name, entry in models.items():
            if not isinstance(entry, (tuple, list)) or len(entry) not in (2, 3):
                raise ValueError(f"chat_box model {name!r}: give (model, tokenizer) or (model, tokenizer, mode)")
            model, tokenizer = entry[0], entry[1]
            self.models[name] = (model, tokenizer, chat_mode(model, tokenizer, entry[2] if len(entry) == 3 else None))
        self.gen_kwargs = {**DEFAULT_GENERATION, **gen_kwargs}
        self.histories: dict[str, list] = {name: [] for name in self.models}
        self.turns: dict[str, list[list[str]]] = {name: [] for name in self.models}  # [query, answer so far]
        self._views: dict = {}  # name -> the ipywidgets.HTML showing that model's conversation
        self._widget = None
        if example:
            self.send(example)

    def send(self, query: str) -> dict:
        """Ask every model ``query`` (each with its own history); return ``{name: response}``."""
        answers = {}
        for name, (model, tokenizer, mode) in self.models.items():
            self.turns[name].append([query, ""])
            response, new_history = "", self.histories[name]
            for response, new_history in stream_chat(
                model, tokenizer, query, self.histories[name], mode=mode, **self.gen_kwargs
            ):
                self.turns[name][-1][1] = _text(response)
                self._show(name)
            self.histories[name] = new_history
            answers[name] = response
        return answers

    def clear(self) -> None:
        """Forget every model's history."""
        for name in self.models:
            self.histories[name], self.turns[name] = [], []
            self._show(name)

    def transcript(self, name: str | None = None) -> str:
        """The conversation as text: one model's, or every model's one after the other."""
        if name is not None:
            return "\n".join(f"用户：{q}\nChatGLM：{a}" for q, a in self.turns[name])
        return "\n\n".join(f"== {n} ==\n{self.transcript(n)}" for n in self.models)

    def _show(self, name: str) -> None:
        view = self._views.get(name)
        if view is not None:
            view.value = f'<pre style="white-space: pre-wrap; margin: 0">{html.escape(self.transcript(name))}</pre>'

    def widget(self):
        """The ipywidgets box (a text field over one column per model), or ``None`` without ipywidgets."""
        if self._widget is not None:
            return self._widget
        try:
            import ipywidgets as widgets
        except ImportError:
            return None
        query = widgets.Text(placeholder="Ask every model (Enter)", continuous_update=False,
                             layout=widgets.Layout(width="70%"))  # fmt: skip
        clear = widgets.Button(description="clear")
        width = f"{100 / len(self.models):.1f}%"
        columns = []
        for name in self.models:
            self._views[name] = widgets.HTML()
            columns.append(widgets.VBox([widgets.HTML(f"<b>{html.escape(name)}</b>"), self._views[name]],
                                        layout=widgets.Layout(width=width, padding="0 8px")))  # fmt: skip
            self._show(name)

        def on_query(change) -> None:
            text = change["new"].strip()
            if not text:
                return
            query.value, query.disabled = "", True  # the empty value comes back here and is ignored
            try:
                self.send(text)
            finally:
                query.disabled = False

        query.observe(on_query, names="value")
        clear.on_click(lambda _: self.clear())
        self._widget = widgets.VBox([widgets.HBox([query, clear]), widgets.HBox(columns)])
        return self._widget

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        """The widget where a Jupyter kernel can show it, always with the transcript as plain text."""
        widget = self.widget() if _in_kernel() else None
        bundle = widget._repr_mimebundle_(include=include, exclude=exclude) if widget is not None else {}
        return {**(bundle or {}), "text/plain": self.transcript()}

    def __repr__(self) -> str:
        return self.transcript()


def chat_box(models: Mapping[str, tuple], example: str | None = "你好", **gen_kwargs) -> ChatBox:
    """A chat box over ``models`` (``{name: (model, tokenizer)}``; ``load_for_inference``'s
    ``(model, tokenizer, mode)`` works as is), e.g. a base model beside its fine-tuned versions.

    ``example`` is asked at once (``None``: nothing), so the result shows each model's answer as
    text wherever the widget cannot appear. Generation is greedy with ``max_new_tokens=128`` unless
    keyword arguments (passed to :func:`glmlab.chat.stream_chat`) say otherwise. Display the
    returned :class:`ChatBox` (the last expression of a cell) to get the widget.
    """
    return ChatBox(models, example, **gen_kwargs)
