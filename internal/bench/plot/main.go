// Command plot draws the groups curve of docs/benchmarks.md: throughput
// against the number of Paxos groups, one line per window W, from the JSON
// that `lockctl bench --json --groups 1,2,4,8,16 --window 1,64` prints. It
// uses the standard library only (image/png and a built-in 3x5 font).
//
//	go run ./internal/bench/plot -in groups.json -out docs/groups.png
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"sort"
	"strings"
)

type result struct {
	Groups    int     `json:"groups"`
	Window    int     `json:"window"`
	OpsPerSec float64 `json:"ops_per_sec"`
}

func main() {
	in := flag.String("in", "", "JSON from lockctl bench --json")
	out := flag.String("out", "groups.png", "PNG to write")
	title := flag.String("title", "ACQUIRE+RELEASE PAIRS/S BY GROUPS", "title (upper case)")
	flag.Parse()
	if err := run(*in, *out, *title); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

func run(in, out, title string) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var doc struct {
		Results []result `json:"results"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	lines := map[int][]result{}
	for _, r := range doc.Results {
		lines[r.Window] = append(lines[r.Window], r)
	}
	if len(lines) == 0 {
		return fmt.Errorf("%s: no results", in)
	}
	img := draw(lines, title)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

const (
	width, height = 720, 450
	left, right   = 80, 30
	top, bottom   = 50, 60
)

var (
	white  = color.RGBA{255, 255, 255, 255}
	black  = color.RGBA{0, 0, 0, 255}
	grey   = color.RGBA{220, 220, 220, 255}
	colors = []color.RGBA{{200, 40, 40, 255}, {30, 90, 200, 255}, {30, 150, 60, 255}, {150, 80, 180, 255}}
)

func draw(lines map[int][]result, title string) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	fill(img, img.Rect, white)
	maxG, maxY := 1, 1.0
	for _, rs := range lines {
		for _, r := range rs {
			maxG = max(maxG, r.Groups)
			maxY = max(maxY, r.OpsPerSec)
		}
	}
	yTop := niceCeil(maxY)
	pw, ph := width-left-right, height-top-bottom
	// x: log2(groups) from 0 to log2(maxG).
	xMax := math.Max(math.Log2(float64(maxG)), 1)
	px := func(g int) int { return left + int(math.Log2(float64(g))/xMax*float64(pw)) }
	py := func(v float64) int { return top + ph - int(v/yTop*float64(ph)) }
	for i := 0; i <= 5; i++ {
		v := yTop * float64(i) / 5
		y := py(v)
		hline(img, left, left+pw, y, grey)
		text(img, left-8-textWidth(num(v)), y-5, num(v), black, 2)
	}
	for g := 1; g <= maxG; g *= 2 {
		x := px(g)
		vline(img, x, top, top+ph, grey)
		s := fmt.Sprint(g)
		text(img, x-textWidth(s)/2, top+ph+8, s, black, 2)
	}
	hline(img, left, left+pw, top+ph, black)
	vline(img, left, top, top+ph, black)
	text(img, left+pw/2-textWidth("GROUPS")/2, height-24, "GROUPS", black, 2)
	text(img, left, 14, strings.ToUpper(title), black, 2)
	ws := make([]int, 0, len(lines))
	for w := range lines {
		ws = append(ws, w)
	}
	sort.Ints(ws)
	for i, w := range ws {
		c := colors[i%len(colors)]
		rs := lines[w]
		sort.Slice(rs, func(a, b int) bool { return rs[a].Groups < rs[b].Groups })
		for j, r := range rs {
			x, y := px(r.Groups), py(r.OpsPerSec)
			dot(img, x, y, c)
			if j > 0 {
				line(img, px(rs[j-1].Groups), py(rs[j-1].OpsPerSec), x, y, c)
			}
		}
		label := fmt.Sprintf("W=%d", w)
		ly := top + 10 + i*20
		fill(img, image.Rect(left+pw-110, ly, left+pw-94, ly+10), c)
		text(img, left+pw-88, ly, label, black, 2)
	}
	return img
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func num(v float64) string {
	if v >= 1000 && math.Mod(v, 1000) == 0 {
		return fmt.Sprintf("%.0fK", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

func hline(img *image.RGBA, x0, x1, y int, c color.RGBA) {
	for x := x0; x <= x1; x++ {
		img.SetRGBA(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) {
	for y := y0; y <= y1; y++ {
		img.SetRGBA(x, y, c)
	}
}

func dot(img *image.RGBA, x, y int, c color.RGBA) {
	fill(img, image.Rect(x-3, y-3, x+4, y+4), c)
}

// line draws a 2-pixel line from (x0, y0) to (x1, y1).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	n := max(abs(x1-x0), abs(y1-y0), 1)
	for i := 0; i <= n; i++ {
		x := x0 + (x1-x0)*i/n
		y := y0 + (y1-y0)*i/n
		fill(img, image.Rect(x, y, x+2, y+2), c)
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// font is a 3x5 bitmap font: each glyph is five rows of three bits.
var font = map[rune][5]uint8{
	'0': {7, 5, 5, 5, 7}, '1': {2, 6, 2, 2, 7}, '2': {7, 1, 7, 4, 7}, '3': {7, 1, 7, 1, 7},
	'4': {5, 5, 7, 1, 1}, '5': {7, 4, 7, 1, 7}, '6': {7, 4, 7, 5, 7}, '7': {7, 1, 1, 1, 1},
	'8': {7, 5, 7, 5, 7}, '9': {7, 5, 7, 1, 7},
	'A': {2, 5, 7, 5, 5}, 'B': {6, 5, 6, 5, 6}, 'C': {7, 4, 4, 4, 7}, 'D': {6, 5, 5, 5, 6},
	'E': {7, 4, 6, 4, 7}, 'F': {7, 4, 6, 4, 4}, 'G': {7, 4, 5, 5, 7}, 'H': {5, 5, 7, 5, 5},
	'I': {7, 2, 2, 2, 7}, 'J': {1, 1, 1, 5, 7}, 'K': {5, 5, 6, 5, 5}, 'L': {4, 4, 4, 4, 7},
	'M': {5, 7, 7, 5, 5}, 'N': {6, 5, 5, 5, 5}, 'O': {7, 5, 5, 5, 7}, 'P': {7, 5, 7, 4, 4},
	'Q': {7, 5, 5, 7, 1}, 'R': {7, 5, 6, 5, 5}, 'S': {7, 4, 7, 1, 7}, 'T': {7, 2, 2, 2, 2},
	'U': {5, 5, 5, 5, 7}, 'V': {5, 5, 5, 5, 2}, 'W': {5, 5, 7, 7, 5}, 'X': {5, 5, 2, 5, 5},
	'Y': {5, 5, 2, 2, 2}, 'Z': {7, 1, 2, 4, 7},
	'=': {0, 7, 0, 7, 0}, '/': {1, 1, 2, 4, 4}, '.': {0, 0, 0, 0, 2}, ',': {0, 0, 0, 2, 4},
	'+': {0, 2, 7, 2, 0}, '-': {0, 0, 7, 0, 0}, '(': {1, 2, 2, 2, 1}, ')': {4, 2, 2, 2, 4},
	' ': {0, 0, 0, 0, 0},
}

func textWidth(s string) int { return len(s) * 4 * 2 }

// text draws s at (x, y) with the 3x5 font, each font pixel scale pixels.
func text(img *image.RGBA, x, y int, s string, c color.RGBA, scale int) {
	for i, r := range s {
		g, ok := font[r]
		if !ok {
			g = font[' ']
		}
		for row := 0; row < 5; row++ {
			for col := 0; col < 3; col++ {
				if g[row]&(4>>col) != 0 {
					x0 := x + (i*4+col)*scale
					y0 := y + row*scale
					fill(img, image.Rect(x0, y0, x0+scale, y0+scale), c)
				}
			}
		}
	}
}
