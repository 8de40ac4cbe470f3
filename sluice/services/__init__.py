"""Service layer: the one place that implements config, execution, replay, lineage and log operations.

Every facade (the executions API, the seed facades, the CLI) calls these; routers only translate
HTTP. Import from the submodules (`sluice.services.executions`, ...): this package runs nothing.
"""
