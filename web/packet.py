"""The evidence packet as a PDF (fpdf2): the printable packet page, on paper.

Same view model as the evidence page (`web.pages.EvidenceView`), same order: who
and what, flags, codes per profile with their counterfactual sentences, what
changed (reason, time, operator), the settings table with changed cells marked
(bold, tinted, and `*` so it survives black-and-white printing), refill
arithmetic, alarms, checklist, supply lines, the session log with each event's
byte offset or CSV line, and the raw files' SHA-256 with the software versions,
so a reviewer can trace every value to the bytes.

Text uses DejaVu Sans when the system has it (Debian `fonts-dejavu-core`, pulled
in by Chromium), else the PDF core font Helvetica with characters outside
Latin-1 replaced. The document's creation date is the generation time given,
so the same inputs give the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from fpdf import FPDF
from fpdf.fonts import FontFace

from web import present
from web.pages import EvidenceView

DEJAVU_DIR: Final = Path("/usr/share/fonts/truetype/dejavu")
CATEGORY_FILL: Final = {
    "prescription": (253, 228, 225),
    "ptm": (241, 230, 250),
    "alarms": (254, 239, 216),
    "reservoir": (224, 236, 253),
    "schedule": (222, 245, 233),
    "device": (234, 236, 240),
}
HEADING_FILL: Final = (236, 239, 243)
DANGER: Final = (180, 35, 24)
WARN: Final = (181, 71, 8)
INK: Final = (16, 24, 40)
MUTED: Final = (102, 112, 133)
# Core-font replacements for characters outside Latin-1.
_LATIN1_REPLACEMENTS: Final = {
    "→": "->",
    "—": "-",
    "–": "-",
    "−": "-",
    "·": "-",
    "≥": ">=",
    "≤": "<=",
    "✓": "v",
    "…": "...",
    "’": "'",
    "“": '"',
    "”": '"',
}


class PacketPDF(FPDF):
    """A4 portrait with a running footer naming the session and the page."""

    def __init__(self, footer_text: str, *, fonts_dir: Path | None = DEJAVU_DIR) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.footer_text = footer_text
        self.unicode = False
        folder = fonts_dir or Path("/nonexistent")
        regular, bold = folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            self.add_font("DejaVu", "", str(regular))
            self.add_font("DejaVu", "B", str(bold))
            self.family_name = "DejaVu"
            self.unicode = True
        else:
            self.family_name = "Helvetica"
        self.set_auto_page_break(auto=True, margin=16)
        self.set_margins(14, 14, 14)

    def t(self, text: str) -> str:
        """Text the current font can draw."""
        if self.unicode:
            return text
        for char, replacement in _LATIN1_REPLACEMENTS.items():
            text = text.replace(char, replacement)
        return text.encode("latin-1", "replace").decode("latin-1")

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(self.family_name, "", 7.5)
        self.set_text_color(*MUTED)
        self.cell(0, 5, self.t(f"{self.footer_text} · page {self.page_no()}/{{nb}}"), align="C")
        self.set_text_color(*INK)

    # -- building blocks ------------------------------------------------------

    def heading(self, text: str) -> None:
        if self.get_y() > self.h - 40:
            self.add_page()
        self.ln(3)
        self.set_font(self.family_name, "B", 11.5)
        self.set_text_color(*INK)
        self.cell(0, 7, self.t(text), new_x="LMARGIN", new_y="NEXT")
        self.set_draw_color(208, 213, 221)
        self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.ln(1.5)

    def para(
        self, text: str, *, size: float = 9, bold: bool = False, color: tuple[int, int, int] = INK
    ) -> None:
        self.set_font(self.family_name, "B" if bold else "", size)
        self.set_text_color(*color)
        self.multi_cell(0, size * 0.5, self.t(text), new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(*INK)

    def grid(
        self,
        headings: Sequence[str],
        rows: Sequence[Sequence[str]],
        widths: Sequence[float],
        *,
        fills: Sequence[Sequence[tuple[int, int, int] | None]] | None = None,
        size: float = 8,
    ) -> None:
        self.set_font(self.family_name, "", size)
        heading_style = FontFace(emphasis="BOLD", fill_color=HEADING_FILL)
        with self.table(
            col_widths=tuple(widths),
            text_align="LEFT",
            line_height=size * 0.5,
            headings_style=heading_style,
            padding=1.2,
        ) as table:
            head = table.row()
            for text in headings:
                head.cell(self.t(text))
            for index, cells in enumerate(rows):
                row = table.row()
                for column, text in enumerate(cells):
                    fill = fills[index][column] if fills is not None else None
                    style = FontFace(emphasis="BOLD", fill_color=fill) if fill else None
                    row.cell(self.t(text), style=style)
        self.ln(1)


def render_pdf(
    view: EvidenceView,
    *,
    generated_at: datetime,
    generated_by: str,
    packet_id: str,
    fonts_dir: Path | None = DEJAVU_DIR,
    compress: bool = True,
) -> bytes:
    """The packet of one session as PDF bytes; every page's footer names the packet,
    the patient ID and the session, so a loose page can be matched to its packet.

    `fonts_dir=None` forces the core font; `compress=False` leaves the page streams
    readable (tests search them for the values).
    """
    record = view.record
    pdf = PacketPDF(
        f"packet {packet_id} · patient ID {view.patient_id} · session {record.session_id}",
        fonts_dir=fonts_dir,
    )
    pdf.compress = compress
    pdf.set_title(f"Evidence packet {record.session_id}")
    pdf.set_author("pumptrail")
    pdf.set_creator(
        f"pumptrail {next((f.value for f in view.versions if f.label == 'pumptrail'), '')}"
    )
    pdf.set_creation_date(generated_at.replace(tzinfo=UTC))
    pdf.alias_nb_pages()
    pdf.add_page()

    pdf.set_font(pdf.family_name, "B", 16)
    pdf.cell(0, 9, pdf.t("Evidence packet"), new_x="LMARGIN", new_y="NEXT")
    pdf.para(f"Session {record.session_id}", size=9, color=MUTED)
    pdf.para(
        f"Patient {view.patient_name} · ID {view.patient_id} · born {view.patient_birth_date}",
        size=10,
        bold=True,
    )
    pdf.ln(1)
    pdf.grid(("", ""), [(f.label, f.value) for f in view.facts], (0.28, 0.72), size=8)

    if view.flags:
        pdf.heading("Flags")
        for flag in view.flags:
            color = DANGER if flag.level == "danger" else WARN if flag.level == "warn" else MUTED
            pdf.para(f"■ {flag.label} ({flag.flag})", bold=flag.level == "danger", color=color)
    if view.critical_alarms:
        pdf.para(
            "Critical alarms: "
            + "; ".join(f"{a.label} ({a.state}, {a.occurred})" for a in view.critical_alarms),
            bold=True,
            color=DANGER,
        )

    pdf.heading("Code under every payer profile")
    if view.codes:
        pdf.grid(
            ("Profile", "Code", "Reprogrammed", "Refill"),
            [
                (
                    c.profile + (" (default)" if c.default else ""),
                    c.procedure,
                    "yes" if c.reprogrammed else "no",
                    "yes" if c.refill else "no",
                )
                for c in view.codes
            ],
            (0.4, 0.2, 0.2, 0.2),
            size=9,
        )
        for code in view.codes:
            pdf.para(f"• {code.counterfactual}", size=8.5)
    else:
        pdf.para("No evidence has been derived for this session yet.", color=WARN)

    pdf.heading("What changed")
    if view.changes:
        pdf.grid(
            ("Setting", "Category", "Before", "After", "When", "Reason", "Time", "By"),
            [
                (
                    c.label,
                    present.CATEGORY_LABELS.get(c.category, c.category),
                    c.before,
                    c.after,
                    c.when_label,
                    c.reason + (f" [{', '.join(c.flags)}]" if c.flags else ""),
                    c.time,
                    c.operator,
                )
                for c in view.changes
            ],
            (0.15, 0.1, 0.12, 0.12, 0.13, 0.13, 0.13, 0.12),
            size=7,
        )
    else:
        pdf.para("Nothing changed.")

    pdf.heading("Settings: prior programmed | interrogated | programmed")
    pdf.para("* marks a changed cell (tinted by category).", size=7.5, color=MUTED)
    state_rows: list[tuple[str, ...]] = []
    state_fills: list[list[tuple[int, int, int] | None]] = []
    for row in view.state.rows:
        cells = [row.prior, row.interrogated, row.programmed]
        state_rows.append(
            (
                f"{row.label} ({present.CATEGORY_LABELS.get(row.category, row.category)})",
                *(
                    (
                        ("* " if c.mark else "")
                        + c.text
                        + (" (reverted)" if c.mark == "reverted" else "")
                    )
                    for c in cells
                ),
            )
        )
        state_fills.append(
            [None, *(CATEGORY_FILL.get(c.category) if c.mark else None for c in cells)]
        )
    pdf.grid(
        ("Setting", "Prior programmed", "Interrogated", "Programmed"),
        state_rows,
        (0.31, 0.23, 0.23, 0.23),
        fills=state_fills,
        size=7.5,
    )

    if view.refill is not None:
        refill = view.refill
        pdf.heading("Refill arithmetic")
        pdf.grid(
            ("Expected (pump)", "Expected (recomputed)", "Aspirated", "Discrepancy", "Threshold"),
            [
                (
                    refill.expected,
                    refill.recomputed,
                    refill.aspirated,
                    refill.discrepancy,
                    refill.threshold,
                )
            ],
            (0.2, 0.2, 0.2, 0.2, 0.2),
            size=8.5,
        )
        pdf.para(f"Added {refill.added}; new reservoir volume {refill.new_volume}.", size=8.5)
        if refill.over_threshold:
            pdf.para(f"Discrepancy over threshold. {refill.direction}", bold=True, color=WARN)
        elif refill.direction:
            pdf.para(refill.direction, size=8, color=MUTED)

    pdf.heading("Alarms (critical first)")
    if view.alarms:
        pdf.grid(
            ("Alarm", "Severity", "State", "Occurred", "Read"),
            [
                (
                    a.label + (" (CRITICAL)" if a.critical else ""),
                    a.severity,
                    a.state,
                    a.occurred,
                    a.read_at,
                )
                for a in view.alarms
            ],
            (0.32, 0.16, 0.12, 0.2, 0.2),
            size=7.5,
        )
    else:
        pdf.para("No alarms read.")

    pdf.heading("Documentation checklist")
    pdf.para("Proven by the log", bold=True, size=9)
    for item in view.checklist.proven:
        pdf.para(f"✓ {item.label} ({item.group})", size=8)
    pdf.para("The note must state", bold=True, size=9)
    for item in view.checklist.note_must_state:
        suffix = " — missing from the log" if item.status == "missing_from_log" else ""
        pdf.para(f"□ {item.label} ({item.group}){suffix}", size=8)

    pdf.heading("Drug supply lines")
    if view.supplies:
        pdf.grid(
            ("HCPCS", "Drug", "Amount injected", "Units"),
            [(s.hcpcs, s.drug, s.amount, s.units) for s in view.supplies],
            (0.35, 0.25, 0.25, 0.15),
            size=8.5,
        )
    else:
        pdf.para("No refill: no drug supply line.")

    pdf.heading("Session log (file order, with place in the export)")
    if view.events:
        pdf.grid(
            ("Time", "Event", "What", "Where"),
            [(e.time, e.kind, e.text, e.position or present.DASH) for e in view.events],
            (0.17, 0.09, 0.58, 0.16),
            size=7,
        )
    if view.warnings:
        pdf.para("Decoder warnings: " + " ".join(view.warnings), size=7.5, color=WARN)

    pdf.heading("Raw files and software")
    pdf.grid(
        ("SHA-256", "Format", "Bytes", "Status"),
        [
            (
                raw.sha256,
                raw.source_format or present.DASH,
                f"{raw.size:,}",
                raw.status + (" (in use)" if raw.sha256 == record.source_sha256 else ""),
            )
            for raw in view.raw_files
        ],
        (0.62, 0.13, 0.1, 0.15),
        size=7,
    )
    pdf.grid(
        ("Component", "Version"), [(f.label, f.value) for f in view.versions], (0.4, 0.6), size=7.5
    )
    pdf.para(
        f"Generated {present.when_text(generated_at, seconds=True)} UTC by {generated_by}.",
        size=8,
        color=MUTED,
    )
    return bytes(pdf.output())
