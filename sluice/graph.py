"""Route-graph helpers, pure so the workflow sandbox can use them too."""

from __future__ import annotations


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = grey
        stack.append(node)
        for nxt in graph.get(node, []):
            if color.get(nxt) == grey:
                return stack[stack.index(nxt) :]
            if color.get(nxt) == white:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        color[node] = black
        return None

    for node in graph:
        if color[node] == white:
            found = visit(node)
            if found:
                return found
    return None


def reachable(graph: dict[str, list[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph.get(todo.pop(), []):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def ancestors(graph: dict[str, list[str]]) -> dict[str, set[str]]:
    """Every route's transitive upstream routes (the graph is acyclic once validated)."""
    parents: dict[str, set[str]] = {n: set() for n in graph}
    for src, targets in graph.items():
        for t in targets:
            parents.setdefault(t, set()).add(src)
    out: dict[str, set[str]] = {}
    for node in graph:
        seen: set[str] = set()
        todo = list(parents.get(node, ()))
        while todo:
            p = todo.pop()
            if p not in seen:
                seen.add(p)
                todo.extend(parents.get(p, ()))
        out[node] = seen
    return out
