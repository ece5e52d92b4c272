extension APIService {
    /// The viewer page. `@CONFIG@` is the job's JSON (size, deep-zoom levels, classes, colours,
    /// shares, MPP, tile step); script errors are written into `#errors` (and `data-errors`),
    /// drawn tiles and overlay cells are counted in `data-tiles` / `data-overlay` on `<body>`.
    static let viewerHTML = #"""
    <!doctype html>
    <html lang="en"><head><meta charset="utf-8"><title>@TITLE@ · Tessera viewer</title>
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <link rel="stylesheet" href="/static/leaflet/leaflet.css">
    <style>
    html,body{height:100%;margin:0;font-family:"DejaVu Sans",sans-serif;font-size:13px}
    #map{position:absolute;top:0;bottom:0;left:0;right:301px;background:#fff}
    #side{position:absolute;top:0;bottom:0;right:0;width:284px;padding:8px;overflow:auto;border-left:1px solid #bbb}
    h1{font-size:15px;margin:4px 0;word-break:break-all} .sub{color:#555;margin-bottom:10px}
    .legend div{margin:3px 0;display:flex;align-items:center}
    .swatch{display:inline-block;width:16px;height:16px;border:1px solid #444;margin-right:8px}
    .share{margin-left:auto;color:#333}
    #info{margin-top:12px;min-height:120px;white-space:pre;font-family:"DejaVu Sans Mono",monospace;font-size:12px}
    #errors{color:#b00;white-space:pre-wrap} .pixelated{image-rendering:pixelated}
    #scale{position:absolute;left:12px;bottom:12px;z-index:1000;background:rgba(255,255,255,.85);padding:3px 6px}
    #scalebar{height:6px;background:#111;margin-top:2px}
    </style></head>
    <body data-tiles="0" data-overlay="0" data-errors="0">
    <div id="map"></div>
    <div id="scale"><span id="scalelabel"></span><div id="scalebar"></div></div>
    <div id="side"><h1 id="title"></h1><div class="sub" id="sub"></div>
    <div class="legend" id="legend"></div><div id="info">point at a tile</div><pre id="errors"></pre></div>
    <script id="config" type="application/json">@CONFIG@</script>
    <script>
    (function () {
      var errors = document.getElementById('errors'), count = 0;
      function report(message) {
        count += 1; errors.textContent += message + '\n'; document.body.setAttribute('data-errors', String(count));
      }
      window.addEventListener('error', function (e) { report('error: ' + (e.message || e.type)); });
      window.addEventListener('unhandledrejection', function (e) { report('rejection: ' + e.reason); });
      window.viewerReport = report;
    })();
    </script>
    <script src="/static/leaflet/leaflet.js"></script>
    <script>
    (function () {
      var cfg = JSON.parse(document.getElementById('config').textContent);
      var body = document.body, full = cfg.maxLevel;
      document.getElementById('title').textContent = cfg.slide;
      document.getElementById('sub').textContent = 'job ' + cfg.job + ' · ' + cfg.model + ' · ' + cfg.width + ' x ' + cfg.height + ' px';
      var legend = document.getElementById('legend');
      cfg.classes.forEach(function (name) {
        var row = document.createElement('div'); row.className = 'class';
        var swatch = document.createElement('span'); swatch.className = 'swatch'; swatch.style.background = cfg.colours[name] || '#888';
        var label = document.createElement('span'); label.className = 'name'; label.textContent = name;
        var share = document.createElement('span'); share.className = 'share';
        var area = cfg.areas[name];
        share.textContent = (100 * (cfg.shares[name] || 0)).toFixed(1) + ' %' + (area !== undefined ? ' · ' + area.toFixed(2) + ' mm²' : '');
        row.appendChild(swatch); row.appendChild(label); row.appendChild(share); legend.appendChild(row);
      });
      var map = L.map('map', {crs: L.CRS.Simple, minZoom: 0, maxZoom: full + 1, zoomSnap: 0.25, zoomDelta: 0.5, attributionControl: false});
      function at(x, y) { return map.unproject([x, y], full); }
      var bounds = L.latLngBounds(at(0, cfg.height), at(cfg.width, 0));
      var slide = L.tileLayer('/v1/jobs/' + cfg.job + '/tiles/{z}/{x}/{y}.jpg',
        {tileSize: cfg.tileSize, minNativeZoom: 0, maxNativeZoom: full, bounds: bounds, noWrap: true, keepBuffer: 1});
      slide.on('tileload', function () { body.setAttribute('data-tiles', String(+body.getAttribute('data-tiles') + 1)); });
      slide.on('tileerror', function (e) { window.viewerReport('tile failed: ' + (e.tile && e.tile.src)); });
      slide.addTo(map);
      map.fitBounds(bounds);
      var step = cfg.step, columns = Math.ceil(cfg.width / step), rows = Math.ceil(cfg.height / step);
      var cells = {};
      function cividis(t) {
        var s = [[0, 34, 78], [59, 73, 108], [124, 123, 120], [188, 175, 111], [253, 231, 55]];
        var p = Math.min(1, Math.max(0, t)) * (s.length - 1), i = Math.min(s.length - 2, Math.floor(p)), f = p - i;
        return 'rgb(' + [0, 1, 2].map(function (c) { return Math.round(s[i][c] + (s[i + 1][c] - s[i][c]) * f); }).join(',') + ')';
      }
      function picture(colour) {
        var canvas = document.createElement('canvas'); canvas.width = columns; canvas.height = rows;
        var context = canvas.getContext('2d');
        Object.keys(cells).forEach(function (key) {
          var cell = cells[key]; context.fillStyle = colour(cell); context.fillRect(cell.column, cell.row, 1, 1);
        });
        return canvas.toDataURL('image/png');
      }
      if (cfg.segmentation) {
        // The class map's blocks, one PNG pixel each; the pointer reads the class from its colour.
        var seg = cfg.segmentation, url = '/v1/jobs/' + cfg.job + '/segmentation.png';
        document.getElementById('info').textContent = 'point at the map';
        var segArea = L.latLngBounds(at(0, seg.rows * seg.block), at(seg.columns * seg.block, 0));
        var segLayer = L.imageOverlay(url, segArea, {opacity: 0.5, className: 'pixelated'});
        segLayer.addTo(map);
        L.control.layers(null, {'class map': segLayer}, {collapsed: false}).addTo(map);
        var image = new Image(), pixels = null;
        image.onload = function () {
          var canvas = document.createElement('canvas'); canvas.width = image.width; canvas.height = image.height;
          var context = canvas.getContext('2d'); context.drawImage(image, 0, 0);
          pixels = context.getImageData(0, 0, image.width, image.height).data;
          body.setAttribute('data-overlay', String(image.width * image.height));
        };
        image.onerror = function () { window.viewerReport('segmentation.png failed'); };
        image.src = url;
        function hex(r, g, b) { return '#' + [r, g, b].map(function (v) { return ('0' + v.toString(16)).slice(-2); }).join(''); }
        map.on('mousemove', function (e) {
          var point = map.project(e.latlng, full), column = Math.floor(point.x / seg.block), row = Math.floor(point.y / seg.block);
          var where = 'x ' + Math.round(point.x) + ', y ' + Math.round(point.y) + '\n';
          var info = document.getElementById('info');
          if (!pixels || column < 0 || row < 0 || column >= seg.columns || row >= seg.rows) { info.textContent = where + 'not analysed'; return; }
          var i = 4 * (row * seg.columns + column);
          if (pixels[i + 3] === 0) { info.textContent = where + 'not analysed'; return; }
          var colour = hex(pixels[i], pixels[i + 1], pixels[i + 2]).toLowerCase();
          var name = cfg.classes.filter(function (c) { return (cfg.colours[c] || '').toLowerCase() === colour; })[0] || '?';
          info.textContent = where + name;
        });
      } else fetch('/v1/jobs/' + cfg.job + '/tiles.csv').then(function (response) {
        if (!response.ok) { throw new Error('tiles.csv: HTTP ' + response.status); }
        return response.text();
      }).then(function (text) {
        var lines = text.trim().split('\n'), header = lines[0].split(',');
        // The probability columns are p_<class>; other columns (flags, ...) are not probabilities.
        var probabilityColumns = header.map(function (h, i) { return h.indexOf('p_') === 0 ? i : -1; })
          .filter(function (i) { return i >= 0; });
        for (var n = 1; n < lines.length; n++) {
          var f = lines[n].split(','), column = Math.floor(+f[1] / step + 0.5), row = Math.floor(+f[2] / step + 0.5);
          var p = probabilityColumns.map(function (i) { return +f[i]; });
          cells[row * columns + column] = {column: column, row: row, name: f[7], p: p, best: Math.max.apply(null, p)};
        }
        var area = L.latLngBounds(at(0, rows * step), at(columns * step, 0));
        var classes = L.imageOverlay(picture(function (c) { return cfg.colours[c.name] || '#888'; }), area,
          {opacity: 0.5, className: 'pixelated'});
        var confidence = L.imageOverlay(picture(function (c) { return cividis(c.best); }), area, {opacity: 0.6, className: 'pixelated'});
        classes.addTo(map);
        L.control.layers(null, {'classes': classes, 'confidence': confidence}, {collapsed: false}).addTo(map);
        body.setAttribute('data-overlay', String(Object.keys(cells).length));
        var info = document.getElementById('info');
        map.on('mousemove', function (e) {
          var point = map.project(e.latlng, full), column = Math.floor(point.x / step), row = Math.floor(point.y / step);
          var cell = cells[row * columns + column];
          if (!cell) { info.textContent = 'x ' + Math.round(point.x) + ', y ' + Math.round(point.y) + '\nnot analysed'; return; }
          info.textContent = 'x ' + Math.round(point.x) + ', y ' + Math.round(point.y) + '\n' + cell.name + '\n' +
            cfg.classes.map(function (name, i) { return name + '  ' + (cell.p[i] || 0).toFixed(3); }).join('\n');
        });
      }).catch(function (error) { window.viewerReport(String(error)); });
      function scale() {
        var label = document.getElementById('scalelabel'), bar = document.getElementById('scalebar');
        if (!cfg.mpp) { label.textContent = 'no MPP: no scale'; bar.style.width = '0'; return; }
        var umPerPixel = cfg.mpp * Math.pow(2, full - map.getZoom());
        var lengths = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];
        var length = lengths[0];
        lengths.forEach(function (l) { if (l / umPerPixel <= 160) { length = l; } });
        bar.style.width = Math.round(length / umPerPixel) + 'px';
        label.textContent = length >= 1000 ? (length / 1000) + ' mm' : length + ' µm';
      }
      map.on('zoomend', scale); scale();
    })();
    </script></body></html>
    """#
}
