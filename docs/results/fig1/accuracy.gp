set terminal pngcairo size 1400,500 enhanced font 'sans,10'
set output 'accuracy.png'
set multiplot layout 1,2 title 'Ioffe and Szegedy (2015), Figure 1: paper-mlp on mnist (3 seeds, band = min..max)'
set xlabel 'training steps'
set ylabel 'test accuracy'
set key bottom right
set grid
set format x '%.0f'
set title 'whole run'
set yrange [*:1]
plot \
  'curves.dat' index 0 using 1:3:4 with filledcurves fs transparent solid 0.2 noborder lc 1 notitle, \
  'curves.dat' index 0 using 1:2 with lines lw 2 lc 1 title 'norm=none', \
  'curves.dat' index 1 using 1:3:4 with filledcurves fs transparent solid 0.2 noborder lc 2 notitle, \
  'curves.dat' index 1 using 1:2 with lines lw 2 lc 2 title 'norm=batch'
set title 'zoom'
set yrange [0.94:1]
plot \
  'curves.dat' index 0 using 1:3:4 with filledcurves fs transparent solid 0.2 noborder lc 1 notitle, \
  'curves.dat' index 0 using 1:2 with lines lw 2 lc 1 title 'norm=none', \
  'curves.dat' index 1 using 1:3:4 with filledcurves fs transparent solid 0.2 noborder lc 2 notitle, \
  'curves.dat' index 1 using 1:2 with lines lw 2 lc 2 title 'norm=batch'
unset multiplot
