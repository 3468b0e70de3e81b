"""Deterministic combinations of hand-written statement parts (PostgreSQL and MySQL).

Each generated statement picks one part per slot by index arithmetic, so the
corpus is the same on every run and every machine.
"""

from __future__ import annotations

from itertools import islice, product

PROJECTIONS = ["*", "id", "c.id, c.name", "count(*)", "c.name, sum(o.total) AS spent",
               "DISTINCT c.city", "c.id, lower(c.email) AS e", "max(o.created_at)",
               "c.id, CASE WHEN o.total > 100 THEN 'big' ELSE 'small' END"]  # fmt: skip
SOURCES = ["customers c", "customers c JOIN orders o ON o.customer_id = c.id",
           "customers c LEFT JOIN orders o ON o.customer_id = c.id",
           "customers c JOIN orders o ON o.customer_id = c.id JOIN items i ON i.order_id = o.id",
           "(SELECT * FROM customers WHERE active) c",
           "customers c CROSS JOIN (SELECT 1 AS one) x"]  # fmt: skip
FILTERS = ["", " WHERE c.id = 7", " WHERE c.name LIKE 'A%'", " WHERE c.id IN (1, 2, 3)",
           " WHERE c.created_at > '2024-01-01' AND c.active", " WHERE c.email IS NOT NULL",
           " WHERE c.id BETWEEN 10 AND 20 OR c.name = 'x'",
           " WHERE EXISTS (SELECT 1 FROM orders o2 WHERE o2.customer_id = c.id)",
           " WHERE c.id = $1"]  # fmt: skip
GROUPS = ["", " GROUP BY 1", " GROUP BY c.name HAVING count(*) > 1"]
TAILS = ["", " ORDER BY 1", " ORDER BY 1 DESC LIMIT 10", " LIMIT 5 OFFSET 10"]

PG_ONLY_FILTERS = [" WHERE c.name ILIKE '%q%'", " WHERE c.data ->> 'tier' = 'gold'",
                   " WHERE c.tags @> ARRAY['vip']", " WHERE c.id = ANY ($1::int[])"]  # fmt: skip

WRITES = [
    "INSERT INTO customers (name, email) VALUES ('{v}', '{v}@example.com')",
    "INSERT INTO customers (id, name) VALUES ({n}, '{v}') ON CONFLICT (id) DO UPDATE SET name = "
    "EXCLUDED.name RETURNING id",
    "UPDATE customers SET name = '{v}' WHERE id = {n}",
    "UPDATE orders SET total = total + {n} WHERE customer_id = {n} RETURNING total",
    "DELETE FROM orders WHERE id = {n}",
    "DELETE FROM sessions WHERE expires_at < now() - interval '{n} days'",
]  # fmt: skip


def selects(dialect: str, limit: int) -> list[str]:
    filters = FILTERS + (PG_ONLY_FILTERS if dialect == "postgres" else [])
    out = []
    for proj, src, flt, grp, tail in islice(product(PROJECTIONS, SOURCES, filters, GROUPS,
                                                    TAILS), 0, None, 7):  # fmt: skip
        if dialect != "postgres" and "$1" in flt:
            flt = flt.replace("$1", "?")
        out.append(f"SELECT {proj} FROM {src}{flt}{grp}{tail}")
        if len(out) >= limit:
            break
    return out


def writes(dialect: str, count: int) -> list[str]:
    out = []
    for n in range(count):
        template = WRITES[n % len(WRITES)]
        if dialect != "postgres" and ("RETURNING" in template or "interval" in template):
            template = WRITES[n % 3 * 2 % len(WRITES)].split(" RETURNING")[0]
        out.append(template.format(v=f"name{n}", n=n))
    return out


def corpus(dialect: str) -> list[str]:
    if dialect == "postgres":
        return selects(dialect, 1100) + writes(dialect, 200)
    return selects(dialect, 300) + writes(dialect, 60)
