set terminal pngcairo size 1000,450 enhanced font 'sans,10'
set output 'percentiles.png'
set multiplot layout 1,2 title 'input to one last-hidden-layer activation: 15th, 50th, 85th percentiles over the test set'
set xlabel 'training steps'
set grid
set format x '%.0f'
set key top right
set yrange [-5.61056:2.85041]
set title 'norm=none'
plot 'curves.dat' index 0 using 1:5:7 with filledcurves fs transparent solid 0.25 noborder lc 1 title '15th-85th', '' index 0 using 1:6 with lines lw 2 lc 1 title '50th'
set title 'norm=batch'
plot 'curves.dat' index 1 using 1:5:7 with filledcurves fs transparent solid 0.25 noborder lc 2 title '15th-85th', '' index 1 using 1:6 with lines lw 2 lc 2 title '50th'
unset multiplot
