//! What the hypervisor shows on a display, as pure logic: the font (the
//! `font8x8` crate's public-domain 8x8 glyphs), the colours, the text grid
//! with its status/banner rows and scrolling log, the banner's words, and
//! how a colour becomes a framebuffer pixel.
//!
//! The hypervisor draws this grid into a GRUB-provided framebuffer (UEFI,
//! Multiboot 2 framebuffer tag) or into VGA text memory (BIOS); the runner
//! (`cargo xtask test`) renders the banner it expects with the same font and
//! colours and looks for it, pixel for pixel, in a QEMU screendump. One
//! definition here keeps the two in step.
//!
//! Layout: rows `0..BANNER_ROWS` are the banner (a status line while the run
//! goes on, the PASS/FAIL banner at the end); the log scrolls below them.

use core::fmt::{self, Write};

/// Glyph width and height in font pixels.
pub const GLYPH: u32 = 8;
/// Rows at the top of the grid that belong to the banner.
pub const BANNER_ROWS: usize = 3;
/// Largest grid the hypervisor keeps (cells beyond are not shown).
pub const MAX_COLS: usize = 160;
/// See [`MAX_COLS`].
pub const MAX_ROWS: usize = 100;

/// The font's bitmap of a byte: ASCII as it is, anything else `?`.
pub fn glyph(c: u8) -> [u8; 8] {
    let c = if (0x20..0x7f).contains(&c) { c } else { b'?' };
    font8x8::legacy::BASIC_LEGACY[c as usize]
}

/// Whether font pixel (`x`, `y`) of `c` is ink (font8x8: bit 0 is the
/// leftmost pixel of a row).
pub fn ink(c: u8, x: u32, y: u32) -> bool {
    x < GLYPH && y < GLYPH && glyph(c)[y as usize] >> x & 1 == 1
}

/// Screen pixels per font pixel for a display `width` pixels wide: about
/// 160 columns at most, so text stays legible on large screens.
pub fn scale_for(width: u32) -> u32 {
    width.div_ceil(MAX_COLS as u32 * GLYPH).max(1)
}

/// A colour as 8-bit red, green, blue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

/// The colour pairs the grid uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Paint {
    /// Log text: light grey on black.
    #[default]
    Log,
    /// The status line while the run goes on: black on light grey.
    Status,
    /// The banner of a passing run: white on green.
    Pass,
    /// The banner of a failing run: white on red.
    Fail,
}

impl Paint {
    /// Foreground (ink) colour.
    pub const fn fg(self) -> Rgb {
        match self {
            Paint::Log => Rgb(0xaa, 0xaa, 0xaa),
            Paint::Status => Rgb(0, 0, 0),
            Paint::Pass | Paint::Fail => Rgb(0xff, 0xff, 0xff),
        }
    }

    /// Background colour.
    pub const fn bg(self) -> Rgb {
        match self {
            Paint::Log => Rgb(0, 0, 0),
            Paint::Status => Rgb(0xaa, 0xaa, 0xaa),
            Paint::Pass => Rgb(0, 0x80, 0),
            Paint::Fail => Rgb(0xb0, 0, 0),
        }
    }

    /// The VGA text-mode attribute byte (background in bits 6:4, foreground
    /// in bits 3:0, the standard 16-colour palette).
    pub const fn vga_attr(self) -> u8 {
        match self {
            Paint::Log => 0x07,
            Paint::Status => 0x70,
            Paint::Pass => 0x2f,
            Paint::Fail => 0x4f,
        }
    }
}

/// One character cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    /// The byte shown.
    pub ch: u8,
    /// Its colours.
    pub paint: Paint,
}

impl Cell {
    /// A blank cell in `paint`.
    pub const fn blank(paint: Paint) -> Cell {
        Cell { ch: b' ', paint }
    }
}

/// Where a colour component sits in a direct-colour pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    /// Lowest bit.
    pub pos: u8,
    /// Number of bits.
    pub size: u8,
}

/// A direct-colour pixel layout (Multiboot 2 framebuffer type 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelFormat {
    /// Red.
    pub red: Channel,
    /// Green.
    pub green: Channel,
    /// Blue.
    pub blue: Channel,
}

impl PixelFormat {
    /// 32-bit pixels 0x00RRGGBB (UEFI GOP's blue-green-red-reserved bytes).
    pub const XRGB8888: PixelFormat = PixelFormat {
        red: Channel { pos: 16, size: 8 },
        green: Channel { pos: 8, size: 8 },
        blue: Channel { pos: 0, size: 8 },
    };

    /// The pixel value of `c`: each 8-bit component cut to its channel's
    /// size and shifted to its position.
    pub fn encode(&self, c: Rgb) -> u32 {
        let put = |v: u8, ch: Channel| {
            let size = ch.size.min(8);
            if size == 0 || ch.pos >= 32 {
                return 0;
            }
            (u32::from(v) >> (8 - size)) << ch.pos
        };
        put(c.0, self.red) | put(c.1, self.green) | put(c.2, self.blue)
    }
}

/// Calls `put(x, y, pixel)` for every screen pixel of `cell` drawn with
/// `scale` screen pixels per font pixel, (x, y) relative to the cell's
/// top-left corner, row by row; `pixel` is the foreground or background of
/// `cell.paint` in `fmt`. The hypervisor draws with it; the runner's tests
/// draw the expected picture with it.
pub fn render_cell(cell: Cell, scale: u32, fmt: &PixelFormat, mut put: impl FnMut(u32, u32, u32)) {
    let (fg, bg) = (fmt.encode(cell.paint.fg()), fmt.encode(cell.paint.bg()));
    let scale = scale.max(1);
    for y in 0..GLYPH * scale {
        for x in 0..GLYPH * scale {
            put(x, y, if ink(cell.ch, x / scale, y / scale) { fg } else { bg });
        }
    }
}

/// A display as the boot loader describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framebuffer {
    /// Physical address of pixel (0, 0) or of the first text cell.
    pub addr: u64,
    /// Bytes per scan line (text: per row of cells).
    pub pitch: u32,
    /// Pixels (text: columns).
    pub width: u32,
    /// Pixels (text: rows).
    pub height: u32,
    /// Bits per pixel (text: 16).
    pub bpp: u8,
    /// What the memory holds.
    pub kind: FramebufferKind,
}

/// The kinds of display memory (Multiboot 2 specification 3.6.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramebufferKind {
    /// Direct colour in this layout.
    Rgb(PixelFormat),
    /// EGA/VGA text: a byte and an attribute byte per cell.
    EgaText,
    /// A palette mode, which Quadrant does not draw in.
    Indexed,
}

impl Framebuffer {
    /// The VGA text screen a PC BIOS leaves: 80x25 cells at 0xb8000.
    pub const VGA_TEXT: Framebuffer =
        Framebuffer { addr: 0xb_8000, pitch: 160, width: 80, height: 25, bpp: 16, kind: FramebufferKind::EgaText };

    /// Bytes of display memory (pitch times rows).
    pub fn byte_len(&self) -> u64 {
        u64::from(self.pitch) * u64::from(self.height)
    }

    /// Why Quadrant cannot draw here, if it cannot.
    pub fn unusable(&self) -> Option<&'static str> {
        match self.kind {
            FramebufferKind::Indexed => Some("an indexed-colour (palette) mode"),
            FramebufferKind::Rgb(_) if !matches!(self.bpp, 16 | 24 | 32) => Some("a pixel size other than 16, 24 or 32 bits"),
            _ if self.width == 0 || self.height == 0 || self.pitch == 0 => Some("a zero size"),
            FramebufferKind::Rgb(_) if u64::from(self.pitch) * 8 < u64::from(self.width) * u64::from(self.bpp) => {
                Some("a pitch shorter than a row of pixels")
            }
            FramebufferKind::EgaText if self.pitch < self.width * 2 => Some("a pitch shorter than a row of cells"),
            _ => None,
        }
    }

    /// Columns and rows of the text grid, and the scale (screen pixels per
    /// font pixel; 1 for text mode).
    pub fn grid(&self) -> (usize, usize, u32) {
        match self.kind {
            FramebufferKind::EgaText => ((self.width as usize).min(MAX_COLS), (self.height as usize).min(MAX_ROWS), 1),
            _ => {
                let s = scale_for(self.width);
                let cols = (self.width / (GLYPH * s)) as usize;
                let rows = (self.height / (GLYPH * s)) as usize;
                (cols.min(MAX_COLS), rows.min(MAX_ROWS), s)
            }
        }
    }
}

/// Counts of the check lines that went by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// `check PASS` lines.
    pub passed: u32,
    /// `check FAIL` lines.
    pub failed: u32,
    /// `check SKIP` lines.
    pub skipped: u32,
}

impl Tally {
    /// Counts `line` if it is a check line (`shared::line` format).
    pub fn count(&mut self, line: &str) {
        if let Some(crate::line::Line::Check { outcome, .. }) = crate::line::parse(line) {
            match outcome {
                crate::Outcome::Pass => self.passed += 1,
                crate::Outcome::Fail => self.failed += 1,
                crate::Outcome::Skip => self.skipped += 1,
            }
        }
    }
}

/// How the run ended, for the banner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending<'a> {
    /// The guest wrote this status to the exit port.
    GuestExit(u8),
    /// The run stopped with this `quadrant-error` kind (its word).
    Error(&'a str),
}

impl Ending<'_> {
    /// Whether the banner says PASS: the guest exited with status 0 and no
    /// check failed.
    pub fn passed(self, t: &Tally) -> bool {
        self == Ending::GuestExit(0) && t.failed == 0
    }
}

/// Writes the banner's first line, e.g. `QUADRANT PASS: 73 passed, 0
/// failed, 1 skipped` or `QUADRANT FAIL (no-vmx): 0 passed, 0 failed, 0
/// skipped`.
pub fn write_banner_title(w: &mut impl Write, ending: Ending<'_>, t: &Tally) -> fmt::Result {
    let verdict = if ending.passed(t) { "PASS" } else { "FAIL" };
    write!(w, "QUADRANT {verdict}")?;
    match ending {
        Ending::GuestExit(0) => {}
        Ending::GuestExit(s) => write!(w, " (guest status {s})")?,
        Ending::Error(kind) => write!(w, " ({kind})")?,
    }
    write!(w, ": {} passed, {} failed, {} skipped", t.passed, t.failed, t.skipped)
}

/// The text grid: banner rows on top, a scrolling log below.
#[derive(Clone, Debug)]
pub struct TextGrid {
    cells: [[Cell; MAX_COLS]; MAX_ROWS],
    cols: usize,
    rows: usize,
    col: usize,
    row: usize,
    /// A `\n` came and nothing after it yet: the line advances with the
    /// next character, so the bottom row is never wasted on an empty line.
    pending_newline: bool,
    /// Rows changed since [`TextGrid::take_dirty`] (bit r = row r).
    dirty: u128,
}

impl TextGrid {
    /// An empty grid of `cols` x `rows` (clamped to the maximum; at least
    /// one log row below the banner).
    pub const fn new(cols: usize, rows: usize) -> TextGrid {
        let cols = if cols > MAX_COLS { MAX_COLS } else if cols == 0 { 1 } else { cols };
        let rows = if rows > MAX_ROWS { MAX_ROWS } else if rows < BANNER_ROWS + 1 { BANNER_ROWS + 1 } else { rows };
        TextGrid { cells: [[Cell::blank(Paint::Log); MAX_COLS]; MAX_ROWS], cols, rows, col: 0, row: BANNER_ROWS, pending_newline: false, dirty: 0 }
    }

    /// Makes this grid an empty `cols` x `rows` one in place (clamped like
    /// [`TextGrid::new`]), without building a new grid on the stack.
    pub fn reset(&mut self, cols: usize, rows: usize) {
        let cols = cols.clamp(1, MAX_COLS);
        let rows = rows.clamp(BANNER_ROWS + 1, MAX_ROWS);
        for r in self.cells.iter_mut() {
            r.fill(Cell::blank(Paint::Log));
        }
        (self.cols, self.rows, self.col, self.row, self.pending_newline, self.dirty) = (cols, rows, 0, BANNER_ROWS, false, 0);
    }

    /// Columns.
    pub const fn cols(&self) -> usize {
        self.cols
    }

    /// Rows (banner included).
    pub const fn rows(&self) -> usize {
        self.rows
    }

    /// The cell at (`col`, `row`).
    pub fn cell(&self, col: usize, row: usize) -> Cell {
        self.cells[row][col]
    }

    /// Appends log text: `\n` ends a line, `\r` is dropped, a long line
    /// wraps, the log scrolls when it reaches the bottom.
    pub fn write_log(&mut self, s: &str) {
        for b in s.bytes() {
            match b {
                b'\r' => {}
                b'\n' if self.pending_newline => self.newline(),
                b'\n' => self.pending_newline = true,
                _ => {
                    if self.pending_newline {
                        self.pending_newline = false;
                        self.newline();
                    }
                    if self.col == self.cols {
                        self.newline();
                    }
                    self.cells[self.row][self.col] = Cell { ch: b, paint: Paint::Log };
                    self.dirty |= 1 << self.row;
                    self.col += 1;
                }
            }
        }
    }

    fn newline(&mut self) {
        self.col = 0;
        if self.row + 1 < self.rows {
            self.row += 1;
            return;
        }
        for r in BANNER_ROWS..self.rows - 1 {
            self.cells[r] = self.cells[r + 1];
        }
        self.cells[self.rows - 1] = [Cell::blank(Paint::Log); MAX_COLS];
        self.dirty |= !((1u128 << BANNER_ROWS) - 1);
    }

    /// Sets one cell.
    pub fn put(&mut self, col: usize, row: usize, cell: Cell) {
        if col < self.cols && row < self.rows {
            self.cells[row][col] = cell;
            self.dirty |= 1 << row;
        }
    }

    /// The rows changed since the last call (bit r = row r), and forgets them.
    pub fn take_dirty(&mut self) -> u128 {
        core::mem::take(&mut self.dirty)
    }

    /// Fills the banner rows with `paint` and writes `lines` into them,
    /// one per row from the second, cut at the right edge.
    pub fn set_banner(&mut self, paint: Paint, lines: &[&str]) {
        for r in 0..BANNER_ROWS {
            self.cells[r] = [Cell::blank(paint); MAX_COLS];
        }
        self.dirty |= (1 << BANNER_ROWS) - 1;
        for (i, text) in lines.iter().enumerate().take(BANNER_ROWS - 1) {
            for (c, b) in text.bytes().take(self.cols.saturating_sub(2)).enumerate() {
                self.cells[1 + i][1 + c] = Cell { ch: b, paint };
            }
        }
    }
}

/// A `fmt::Write` into a fixed buffer that keeps what fits (for banner
/// lines built without a heap).
#[derive(Debug)]
pub struct FixedText<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Default for FixedText<N> {
    fn default() -> Self {
        FixedText { buf: [0; N], len: 0 }
    }
}

impl<const N: usize> FixedText<N> {
    /// The text so far.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> Write for FixedText<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let mut b = [0u8; 4];
            let e = c.encode_utf8(&mut b).as_bytes();
            if self.len + e.len() > N {
                return Ok(());
            }
            self.buf[self.len..self.len + e.len()].copy_from_slice(e);
            self.len += e.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_text(g: &TextGrid, r: usize) -> [u8; 12] {
        let mut t = [0u8; 12];
        for (c, b) in t.iter_mut().enumerate() {
            *b = g.cell(c, r).ch;
        }
        t
    }

    #[test]
    fn font_has_ink_where_the_glyph_does() {
        // 'I' in font8x8: rows 0..6 have ink, row 7 is empty.
        assert!((0..7).all(|y| (0..8).any(|x| ink(b'I', x, y))));
        assert!(!(0..8).any(|x| ink(b'I', x, 7)));
        assert!(!(0..8).any(|y| (0..8).any(|x| ink(b' ', x, y))));
        assert_eq!(glyph(0x80), glyph(b'?'));
        assert!(!ink(b'I', 8, 0));
    }

    #[test]
    fn scale_and_grid() {
        assert_eq!(scale_for(800), 1);
        assert_eq!(scale_for(1280), 1);
        assert_eq!(scale_for(1920), 2);
        assert_eq!(scale_for(3840), 3);
        let rgb = PixelFormat::XRGB8888;
        let fb = Framebuffer { addr: 0x8000_0000, pitch: 1280 * 4, width: 1280, height: 800, bpp: 32, kind: FramebufferKind::Rgb(rgb) };
        assert_eq!(fb.grid(), (160, 100, 1));
        assert_eq!(fb.unusable(), None);
        assert_eq!(Framebuffer::VGA_TEXT.grid(), (80, 25, 1));
        assert!(Framebuffer { bpp: 8, ..fb }.unusable().is_some());
        assert!(Framebuffer { pitch: 100, ..fb }.unusable().is_some());
        assert!(Framebuffer { kind: FramebufferKind::Indexed, ..fb }.unusable().is_some());
    }

    #[test]
    fn pixels_encode_per_channel() {
        let bgrx = PixelFormat::XRGB8888;
        assert_eq!(bgrx.encode(Rgb(0xb0, 0x01, 0x02)), 0x00b0_0102);
        let rgb565 = PixelFormat {
            red: Channel { pos: 11, size: 5 },
            green: Channel { pos: 5, size: 6 },
            blue: Channel { pos: 0, size: 5 },
        };
        assert_eq!(rgb565.encode(Rgb(0xff, 0xff, 0xff)), 0xffff);
        assert_eq!(rgb565.encode(Rgb(0, 0x80, 0)), 0x20 << 5);
    }

    #[test]
    fn cells_render_scaled() {
        let rgb = PixelFormat::XRGB8888;
        let mut px = [[0u32; 16]; 16];
        let mut n = 0;
        render_cell(Cell { ch: b'I', paint: Paint::Fail }, 2, &rgb, |x, y, v| {
            px[y as usize][x as usize] = v;
            n += 1;
        });
        assert_eq!(n, 256);
        let (fg, bg) = (rgb.encode(Paint::Fail.fg()), rgb.encode(Paint::Fail.bg()));
        for (y, row) in px.iter().enumerate() {
            for (x, v) in row.iter().enumerate() {
                assert_eq!(*v, if ink(b'I', x as u32 / 2, y as u32 / 2) { fg } else { bg }, "({x}, {y})");
            }
        }
        assert!(px.iter().flatten().any(|v| *v == fg) && px.iter().flatten().any(|v| *v == bg));
    }

    #[test]
    fn log_wraps_and_scrolls_below_the_banner() {
        let mut g = TextGrid::new(12, BANNER_ROWS + 2);
        g.write_log("first\r\nsecond\n");
        assert_eq!(&row_text(&g, BANNER_ROWS)[..5], b"first");
        assert_eq!(&row_text(&g, BANNER_ROWS + 1)[..6], b"second");
        // The third line scrolls "first" away; the banner rows stay blank.
        assert_eq!(g.take_dirty(), 0b11 << BANNER_ROWS);
        assert_eq!(g.take_dirty(), 0);
        g.write_log("third");
        assert_ne!(g.take_dirty() & 1 << BANNER_ROWS, 0);
        assert_eq!(&row_text(&g, BANNER_ROWS)[..6], b"second");
        assert_eq!(&row_text(&g, BANNER_ROWS + 1)[..5], b"third");
        assert_eq!(row_text(&g, 0), [b' '; 12]);
        // A line longer than the grid wraps.
        g.write_log("\nabcdefghijklmnop");
        assert_eq!(&row_text(&g, BANNER_ROWS)[..], b"abcdefghijkl");
        assert_eq!(&row_text(&g, BANNER_ROWS + 1)[..4], b"mnop");
    }

    #[test]
    fn reset_empties_in_place() {
        let mut g = TextGrid::new(12, 6);
        g.write_log("abc\nx");
        g.reset(200, 1);
        assert_eq!((g.cols(), g.rows(), g.cell(0, BANNER_ROWS).ch, g.take_dirty()), (MAX_COLS, BANNER_ROWS + 1, b' ', 0));
        g.write_log("z");
        assert_eq!(g.cell(0, BANNER_ROWS).ch, b'z');
    }

    #[test]
    fn banner_text_and_rows() {
        let mut t = Tally::default();
        for l in ["check PASS a/b: x", "check PASS a/c:", "check SKIP a/d: no", "log text", "check FAIL e/f: y"] {
            t.count(l);
        }
        assert_eq!(t, Tally { passed: 2, failed: 1, skipped: 1 });
        let mut s = FixedText::<80>::default();
        write_banner_title(&mut s, Ending::GuestExit(0), &t).unwrap();
        assert_eq!(s.as_str(), "QUADRANT FAIL: 2 passed, 1 failed, 1 skipped");
        let mut s = FixedText::<80>::default();
        write_banner_title(&mut s, Ending::Error("no-vmx"), &Tally::default()).unwrap();
        assert_eq!(s.as_str(), "QUADRANT FAIL (no-vmx): 0 passed, 0 failed, 0 skipped");
        let ok = Tally { passed: 3, failed: 0, skipped: 0 };
        assert!(Ending::GuestExit(0).passed(&ok));
        assert!(!Ending::GuestExit(1).passed(&ok));
        let mut s = FixedText::<80>::default();
        write_banner_title(&mut s, Ending::GuestExit(0), &ok).unwrap();
        assert_eq!(s.as_str(), "QUADRANT PASS: 3 passed, 0 failed, 0 skipped");

        let mut g = TextGrid::new(12, 6);
        g.set_banner(Paint::Fail, &["QUADRANT FAIL (x)", "second"]);
        assert_eq!(g.cell(0, 0), Cell::blank(Paint::Fail));
        assert_eq!(&row_text(&g, 1)[..], b" QUADRANT F ");
        assert_eq!(g.cell(11, 1), Cell::blank(Paint::Fail));
        assert_eq!(&row_text(&g, 2)[..7], b" second");
        assert_eq!(g.take_dirty(), 0b111);
        g.put(3, 4, Cell { ch: b'x', paint: Paint::Log });
        g.put(30, 4, Cell { ch: b'y', paint: Paint::Log });
        assert_eq!((g.cell(3, 4).ch, g.take_dirty()), (b'x', 1 << 4));
        let mut short = FixedText::<4>::default();
        write!(short, "abcdef").unwrap();
        assert_eq!(short.as_str(), "abcd");
    }
}
