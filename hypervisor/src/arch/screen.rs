//! The hypervisor's display: the console's text (its log and the guest's
//! lines) in a scrolling log, a status line with the running check counts,
//! and at the end a PASS/FAIL banner with the summary counts, so a test rig
//! without a serial port shows the result. Drawn into the GRUB framebuffer
//! (UEFI, Multiboot 2 framebuffer tag) with the `font8x8` glyphs, or into
//! VGA text memory (BIOS). Layout, font, colours and banner words are
//! `shared::screen`'s, which the runner uses to find the banner in a
//! screendump.

use super::phys::DisplayMemory;
use core::fmt::{self, Write};
use shared::screen::{
    self, Cell, Ending, FixedText, Framebuffer, FramebufferKind, Paint, PixelFormat, Tally, TextGrid, GLYPH,
};

/// The two text grids of the one screen: what should be shown, and what
/// is shown (cells are drawn only where the two differ). Static, because
/// they are larger than the boot stack should carry.
static GRIDS: spin::Mutex<[TextGrid; 2]> =
    spin::Mutex::new([TextGrid::new(screen::MAX_COLS, screen::MAX_ROWS), TextGrid::new(screen::MAX_COLS, screen::MAX_ROWS)]);

/// One display and the text on it.
pub struct Screen {
    mem: DisplayMemory,
    fb: Framebuffer,
    scale: u32,
    grids: &'static mut [TextGrid; 2],
    /// The console line being written (check lines are counted whole).
    line: FixedText<512>,
    tally: Tally,
    /// Whether the tally changed since the status line was drawn.
    tally_dirty: bool,
}

impl fmt::Debug for Screen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Screen").field("fb", &self.fb).field("scale", &self.scale).finish_non_exhaustive()
    }
}

impl Screen {
    /// A screen on `fb`, whose memory is `mem`; an error names what Quadrant
    /// cannot draw in.
    pub fn new(mem: DisplayMemory, fb: Framebuffer) -> Result<Self, &'static str> {
        if let Some(why) = fb.unusable() {
            return Err(why);
        }
        if mem.len() < fb.byte_len() {
            return Err("its memory is smaller than pitch x height");
        }
        let (cols, rows, scale) = fb.grid();
        let grids = spin::MutexGuard::leak(GRIDS.try_lock().ok_or("the screen is already in use")?);
        for g in grids.iter_mut() {
            g.reset(cols, rows);
        }
        let mut s = Screen {
            mem,
            fb,
            scale,
            grids,
            line: FixedText::default(),
            tally: Tally::default(),
            tally_dirty: true,
        };
        // The display holds whatever firmware and GRUB left: paint every
        // cell once; from then on only changed cells are drawn.
        for r in 0..rows {
            for c in 0..cols {
                s.draw(c, r, s.grids[1].cell(c, r));
            }
        }
        s.flush();
        Ok(s)
    }

    /// The display, for the log.
    pub fn framebuffer(&self) -> &Framebuffer {
        &self.fb
    }

    /// Columns, rows and scale of the text grid.
    pub fn grid_size(&self) -> (usize, usize, u32) {
        (self.grids[0].cols(), self.grids[0].rows(), self.scale)
    }

    /// Appends console text; whole lines are drawn as they end.
    pub fn write(&mut self, s: &str) {
        self.grids[0].write_log(s);
        for part in s.split_inclusive('\n') {
            match part.strip_suffix('\n') {
                Some(rest) => {
                    let _ = self.line.write_str(rest);
                    let before = self.tally;
                    self.tally.count(self.line.as_str().trim_end_matches('\r'));
                    self.tally_dirty |= before != self.tally;
                    self.line = FixedText::default();
                    self.flush();
                }
                None => {
                    let _ = self.line.write_str(part);
                }
            }
        }
    }

    /// The counts of the check lines shown so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Draws the end-of-run banner: title and `detail`, green for a pass,
    /// red for a failure.
    pub fn banner(&mut self, ending: Ending<'_>, detail: &str) {
        let mut title = FixedText::<160>::default();
        let _ = screen::write_banner_title(&mut title, ending, &self.tally);
        let paint = if ending.passed(&self.tally) { Paint::Pass } else { Paint::Fail };
        self.grids[0].set_banner(paint, &[title.as_str(), detail]);
        self.tally_dirty = false;
        self.flush();
    }

    /// Redraws the cells that changed.
    fn flush(&mut self) {
        if self.tally_dirty {
            self.tally_dirty = false;
            let mut status = FixedText::<160>::default();
            let t = self.tally;
            let _ = write!(
                status,
                "Quadrant hypervisor: running; {} passed, {} failed, {} skipped so far",
                t.passed, t.failed, t.skipped
            );
            self.grids[0].set_banner(Paint::Status, &[status.as_str()]);
        }
        let dirty = self.grids[0].take_dirty();
        for r in (0..self.grids[0].rows()).filter(|r| dirty >> r & 1 == 1) {
            for c in 0..self.grids[0].cols() {
                let want = self.grids[0].cell(c, r);
                if self.grids[1].cell(c, r) != want {
                    self.draw(c, r, want);
                    self.grids[1].put(c, r, want);
                }
            }
        }
        let _ = self.grids[1].take_dirty();
    }

    /// Draws one cell.
    fn draw(&self, col: usize, row: usize, cell: Cell) {
        let (col, row) = (col as u64, row as u64);
        let pitch = u64::from(self.fb.pitch);
        match self.fb.kind {
            FramebufferKind::EgaText => {
                let v = u32::from(cell.ch) | u32::from(cell.paint.vga_attr()) << 8;
                self.mem.write(row * pitch + col * 2, 2, v);
            }
            FramebufferKind::Rgb(fmt) => self.draw_glyph(col, row, cell, &fmt),
            FramebufferKind::Indexed => {}
        }
    }

    fn draw_glyph(&self, col: u64, row: u64, cell: Cell, fmt: &PixelFormat) {
        let bpp = u64::from(self.fb.bpp / 8);
        let pitch = u64::from(self.fb.pitch);
        let size = u64::from(GLYPH * self.scale);
        let (x0, y0) = (col * size, row * size);
        screen::render_cell(cell, self.scale, fmt, |x, y, v| {
            self.mem.write((y0 + u64::from(y)) * pitch + (x0 + u64::from(x)) * bpp, bpp as u8, v);
        });
    }
}
